"""Lean decisions: completed from catalog facts carried earlier, also after a restore."""

from __future__ import annotations

import itertools
import json

import pytest

from bench.service_perf import event_stream
from learner.decoder import EventDecoder
from learner.join import JoinBuffer, LearnStep
from learner.wire_events import Decision, wire_event
from router_service.events import DecisionEvent, EventError, encode_event
from router_service.model_facts import facts_id
from tests.learner.test_join import decision, outcome

FACTS_A = {"id": "a", "tier": "small"}
FACTS_B = {"id": "b", "tier": "large"}
REF_A, REF_B = facts_id(FACTS_A), facts_id(FACTS_B)
LEAN_ACTIONS = [{"cost": {"log_cost": -0.5}}, {"cost": {"log_cost": -0.2}}]


def lean(did: str, seconds: float, carried: bool, **overrides: object) -> DecisionEvent:
    facts = {REF_A: FACTS_A, REF_B: FACTS_B} if carried else {}
    values = {
        "action_features": LEAN_ACTIONS,
        "model_refs": [REF_A, REF_B],
        "model_facts": facts,
        **overrides,
    }
    return decision(did, seconds, **values)


def test_a_later_decision_is_completed_from_facts_an_earlier_one_carried() -> None:
    decoder = EventDecoder()
    first = decoder.decode(encode_event(lean("d1", 0, carried=True)))
    second = decoder.decode(encode_event(lean("d2", 1, carried=False)))
    for event in (first, second):
        assert isinstance(event, Decision)
        assert event.action_features == [
            {"model": FACTS_A, "cost": {"log_cost": -0.5}},
            {"model": FACTS_B, "cost": {"log_cost": -0.2}},
        ]
        assert event.model_refs == [] and event.model_facts == {}


def test_a_complete_decision_passes_through_unchanged() -> None:
    event = decision("d1", 0)
    assert EventDecoder().decode(encode_event(event)) == wire_event(event)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (lean("d1", 0, carried=False), f"model_refs: {REF_A!r} is not in model_facts"),
        (
            lean("d1", 0, carried=True, model_refs=[REF_A]),
            "model_refs: 1 ids for 2 action_features; expected one per action",
        ),
        (
            lean("d1", 0, carried=True, action_features=[{"model": {"id": "a"}}, {}]),
            "an action has a model namespace and a model ref",
        ),
    ],
)
def test_a_decision_that_cannot_be_completed_is_an_event_error(
    event: DecisionEvent, reason: str
) -> None:
    with pytest.raises(EventError, match=reason):
        EventDecoder().decode(encode_event(event))


def test_the_least_recently_used_facts_go_past_the_limit() -> None:
    decoder = EventDecoder(kept=1)
    only_a = lean("d1", 0, carried=False, model_facts={REF_A: FACTS_A}, model_refs=[REF_A, REF_A])
    decoder.decode(encode_event(only_a))
    decoder.decode(encode_event(lean("d2", 1, carried=True, model_refs=[REF_B, REF_B])))
    assert list(decoder.to_state()) == [REF_B]


def test_a_restored_join_completes_held_decisions_and_new_ones() -> None:
    join = JoinBuffer(60.0, dedupe_window=120.0, task_wait=100.0, wait_for_task=False)
    first = join.decoder.decode(encode_event(lean("d1", 0, carried=True)))
    join.add(first, encode_event(lean("d1", 0, carried=True)).decode())
    state = json.loads(json.dumps(join.to_state()))

    resumed = JoinBuffer(60.0, dedupe_window=120.0, task_wait=100.0, wait_for_task=False)
    resumed.restore(state)
    signals = resumed.add(outcome("d1", 5), encode_event(outcome("d1", 5)).decode())
    assert signals == [LearnStep(first, outcome("d1", 5), None)]
    later = resumed.decoder.decode(encode_event(lean("d2", 6, carried=False)))
    assert isinstance(later, Decision)
    assert [a["model"] for a in later.action_features] == [FACTS_A, FACTS_B]


def test_a_task_carrying_known_facts_again_keeps_their_dict() -> None:
    decoder = EventDecoder()
    firsts = [
        event.action_features
        for _, value in itertools.islice(event_stream(22, seed=3), 22)
        if isinstance(event := decoder.decode(value), Decision)
    ]
    assert len(firsts) == 10  # two tasks, each carrying every candidate's facts once
    assert all(
        a["model"] is b["model"] for a, b in zip(firsts[0], firsts[5], strict=True)
    )  # the second task's carried facts did not replace the first's dicts
