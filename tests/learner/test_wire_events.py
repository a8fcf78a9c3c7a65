"""The learner's event structs: the same events accepted, the same values, the same reasons."""

from __future__ import annotations

import json

import pytest

from learner.wire_events import (
    Correction,
    Decision,
    Outcome,
    TaskClosed,
    decode_wire,
    wire_event,
    wire_json,
)
from router_service.events import (
    CorrectionEvent,
    DecisionEvent,
    EventError,
    OutcomeEvent,
    TaskClosedEvent,
    decode_event,
    encode_event,
)
from tests.learner.test_join import at, closed, decision, outcome

EVENTS = [
    decision("d1", 0, model_refs=[], total_dollars=2.0, prompt="hi"),
    outcome("d1", 1, cost_source="reported", latency_ms=3.5, error="x"),
    CorrectionEvent(task_id="t1", decision_id="d1", occurred_at=at(2), rating="up", note="ok"),
    closed("t1", 3, decision_ids=["d1"]),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_a_struct_holds_the_pydantic_events_values(event: object) -> None:
    data = encode_event(event)  # type: ignore[arg-type]
    decoded = decode_wire(data)
    assert decoded == wire_event(event)  # type: ignore[arg-type]
    assert decoded.type == event.type  # type: ignore[attr-defined]
    for name, value in decode_event(data).model_dump().items():
        assert getattr(decoded, name) == value
    assert json.loads(wire_json(decoded)) == json.loads(data)


def _with(event: object, **fields: object) -> bytes:
    return json.dumps({**json.loads(encode_event(event)), **fields}).encode()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (_with(EVENTS[0], input_tokens=-1), "input_tokens"),
        (_with(EVENTS[0], propensity=0), "propensity"),
        (_with(EVENTS[0], actions=[]), "actions"),
        (_with(EVENTS[0], surprise=1), "surprise"),
        (_with(EVENTS[1], quality=1.5), "quality"),
        (_with(EVENTS[1], cost_source="guess"), "cost_source"),
        (_with(EVENTS[3], total_dollars=0), "total_dollars"),
        (_with(EVENTS[3], type="nope"), "event"),
        (b"{not json", "event"),
    ],
)
def test_a_bad_event_gets_the_reason_decode_event_gives(data: bytes, field: str) -> None:
    with pytest.raises(EventError) as expected:
        decode_event(data)
    with pytest.raises(EventError, match=field) as raised:
        decode_wire(data)
    assert raised.value.reason == expected.value.reason


def test_what_pydantic_coerces_is_accepted_with_pydantics_values() -> None:
    data = _with(EVENTS[0], input_tokens="100", occurred_at=1_700_000_000, optional="true")
    decoded = decode_wire(data)
    assert (decoded.input_tokens, decoded.optional) == (100, True)  # type: ignore[union-attr]
    assert decoded.occurred_at == decode_event(data).occurred_at


@pytest.mark.parametrize(
    ("struct", "model"),
    [
        (Decision, DecisionEvent),
        (Outcome, OutcomeEvent),
        (Correction, CorrectionEvent),
        (TaskClosed, TaskClosedEvent),
    ],
)
def test_the_structs_have_the_models_fields(struct: type, model: type) -> None:
    assert set(struct.__struct_fields__) == set(model.model_fields) - {"type"}  # type: ignore[attr-defined]
    assert struct.type == model.model_fields["type"].default  # type: ignore[attr-defined]
