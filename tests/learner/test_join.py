"""The decision/outcome join: out of order, late, duplicate, task credit, restore."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from learner.join import DeadLetter, JoinBuffer, LearnCorrection, LearnStep, Signal, TaskResult
from learner.wire_events import wire_event
from router_service.events import (
    AnyEvent,
    CorrectionEvent,
    DecisionEvent,
    OutcomeEvent,
    TaskClosedEvent,
    decode_event,
    encode_event,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
WINDOW = 60.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def decision(did: str, seconds: float, task: str = "t1", **overrides: object) -> DecisionEvent:
    values: dict[str, object] = {
        "event_id": f"ev-{did}",
        "task_id": task,
        "occurred_at": at(seconds),
        "decision_id": did,
        "trust_domain": "eng",
        "task_type": "research",
        "step_kind": "execution",
        "step_type": "extraction",
        "input_tokens": 100,
        "expected_output_tokens": 10,
        "granted_max_output_tokens": 20,
        "actions": ["a", "b"],
        "pmf": [0.9, 0.1],
        "chosen_index": 0,
        "model": "a",
        "propensity": 0.9,
        "estimated_costs": [0.01, 0.001],
        "shared_features": {"step": {"kind": "execution"}},
        "action_features": [{"model": {"id": "a"}}, {"model": {"id": "b"}}],
        "policy_version": "test",
    }
    values.update(overrides)
    return DecisionEvent.model_validate(values)


def outcome(did: str, seconds: float, task: str = "t1", **overrides: object) -> OutcomeEvent:
    values: dict[str, object] = {
        "event_id": f"ev-out-{did}-{seconds}",
        "task_id": task,
        "occurred_at": at(seconds),
        "decision_id": did,
        "model": "a",
        "step_kind": "execution",
        "step_type": "extraction",
        "trust_domain": "eng",
        "success": True,
        "quality": 0.8,
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_dollars": 0.01,
    }
    values.update(overrides)
    return OutcomeEvent.model_validate(values)


def closed(task: str, seconds: float, **overrides: object) -> TaskClosedEvent:
    values: dict[str, object] = {
        "event_id": f"ev-close-{task}",
        "task_id": task,
        "occurred_at": at(seconds),
        "trust_domain": "eng",
        "success": True,
        "quality": 0.9,
        "spent_dollars": 0.5,
        "total_dollars": 1.0,
        "steps": 1,
    }
    values.update(overrides)
    return TaskClosedEvent.model_validate(values)


def feed(buffer: JoinBuffer, *events: AnyEvent) -> list[Signal]:
    signals: list[Signal] = []
    for event in events:
        signals += buffer.add(wire_event(event), encode_event(event).decode())  # as decoded
    return signals


def learned(
    decision: DecisionEvent, outcome: OutcomeEvent, task: TaskClosedEvent | None = None
) -> LearnStep:
    """The step the join gives for these events (as the learner decodes them)."""
    return LearnStep(wire_event(decision), wire_event(outcome), task and wire_event(task))


def buffer(wait_for_task: bool = False) -> JoinBuffer:
    return JoinBuffer(
        WINDOW, dedupe_window=2 * WINDOW, task_wait=100.0, wait_for_task=wait_for_task
    )


def reasons(signals: list[Signal]) -> list[str]:
    return [s.reason for s in signals if isinstance(s, DeadLetter)]


def test_outcome_joins_its_decision() -> None:
    signals = feed(buffer(), decision("d1", 0), outcome("d1", 5))
    assert signals == [learned(decision("d1", 0), outcome("d1", 5))]


def test_outcome_before_its_decision_waits_for_it() -> None:
    join = buffer()
    assert feed(join, outcome("d1", 5)) == []
    assert join.pending() == 1
    signals = feed(join, decision("d1", 0))
    assert signals == [learned(decision("d1", 0), outcome("d1", 5))]
    assert join.pending() == 1  # the decision stays for corrections until its window ends


def test_outcome_after_the_window_is_dead_lettered_as_late() -> None:
    join = buffer()
    signals = feed(join, decision("d1", 0), decision("d2", WINDOW + 1, task="t2"))
    assert reasons(signals) == ["no outcome for decision 'd1' within the join window"]
    late = feed(join, outcome("d1", WINDOW + 2))
    assert len(late) == 1 and isinstance(late[0], DeadLetter)
    assert late[0].reason.startswith("late: decision 'd1' was 62.0s earlier")
    assert json.loads(late[0].payload)["decision_id"] == "d1"
    assert join.stats["late"] == 1 and join.stats["unjoined"] == 1


def test_outcome_without_decision_expires_with_reason() -> None:
    join = buffer()
    feed(join, outcome("ghost", 0))
    signals = feed(join, decision("d2", WINDOW + 1))
    assert reasons(signals) == ["no decision 'ghost' arrived within the join window"]


def test_outcome_without_decision_already_past_the_window_is_dead_lettered_at_once() -> None:
    join = buffer()
    feed(join, decision("d2", 3 * WINDOW, task="t2"))
    signals = feed(join, outcome("unknown", WINDOW))  # no later event needed to expire it
    assert reasons(signals) == ["no decision 'unknown' arrived within the join window"]
    assert join.pending() == 1  # only d2


def test_duplicate_event_id_is_ignored_and_counted() -> None:
    join = buffer()
    signals = feed(join, decision("d1", 0), decision("d1", 0), outcome("d1", 5), outcome("d1", 5))
    assert [type(s) for s in signals] == [LearnStep]
    assert join.stats["duplicates"] == 2


def test_second_outcome_for_a_decision_is_dead_lettered() -> None:
    join = buffer()
    signals = feed(join, decision("d1", 0), outcome("d1", 5), outcome("d1", 6))
    assert [type(s) for s in signals] == [LearnStep, DeadLetter]
    assert reasons(signals) == ["second outcome for decision 'd1'"]
    assert join.stats["duplicate_outcomes"] == 1


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"chosen_index": 2}, "chosen_index 2 is out of range for 2 actions"),
        ({"pmf": [1.0]}, "actions, pmf and action_features differ in length (2, 1, 2)"),
    ],
)
def test_inconsistent_decision_is_dead_lettered(overrides: dict[str, object], reason: str) -> None:
    [signal] = feed(buffer(), decision("d1", 0, **overrides))
    assert isinstance(signal, DeadLetter) and reason in signal.reason


def test_outcome_for_another_model_is_dead_lettered() -> None:
    signals = feed(buffer(), decision("d1", 0), outcome("d1", 1, model="b"))
    assert reasons(signals) == ["outcome model 'b' differs from the decision's model 'a'"]


def test_steps_wait_for_the_task_result_and_get_its_credit() -> None:
    join = buffer(wait_for_task=True)
    assert feed(join, decision("d1", 0), outcome("d1", 1), decision("d2", 2)) == []
    signals = feed(join, outcome("d2", 3), closed("t1", 4))
    task = closed("t1", 4)
    assert signals == [
        TaskResult(wire_event(task)),
        learned(decision("d1", 0), outcome("d1", 1), task),
        learned(decision("d2", 2), outcome("d2", 3), task),
    ]
    # A step joined after the close is learned at once, with the credit.
    later = feed(join, decision("d3", 5), outcome("d3", 6))
    assert later == [learned(decision("d3", 5), outcome("d3", 6), task)]


def test_step_without_task_result_is_learned_after_the_wait() -> None:
    join = buffer(wait_for_task=True)
    feed(join, decision("d1", 0), outcome("d1", 1))
    signals = feed(join, decision("d9", 102, task="t9"))
    assert learned(decision("d1", 0), outcome("d1", 1)) in signals


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"preferred_model": "b"}, LearnCorrection),
        ({"rating": "down"}, LearnCorrection),
        ({"preferred_model": "zz"}, "preferred_model 'zz' is not among the decision's actions"),
        ({}, "correction has neither preferred_model nor rating"),
    ],
)
def test_corrections(fields: dict[str, object], expected: object) -> None:
    correction = CorrectionEvent(task_id="t1", decision_id="d1", occurred_at=at(3), **fields)
    [signal] = feed(buffer(), decision("d1", 0), outcome("d1", 1), correction)[1:]
    if isinstance(expected, str):
        assert isinstance(signal, DeadLetter) and expected in signal.reason
    else:
        assert signal == LearnCorrection(wire_event(decision("d1", 0)), wire_event(correction))


def test_restored_buffer_continues_identically() -> None:
    events: list[AnyEvent] = [
        decision("d1", 0),
        outcome("d2", 1),
        decision("d2", 2),
        decision("d3", 3),
        outcome("d1", 4),
        closed("t1", 5),
        decision("d4", 200, task="t4"),
        outcome("d3", 201),
    ]
    straight = buffer(wait_for_task=True)
    expected = feed(straight, *events)
    for cut in range(len(events) + 1):
        first = buffer(wait_for_task=True)
        head = feed(first, *events[:cut])
        state = json.loads(json.dumps(first.to_state()))
        resumed = buffer(wait_for_task=True)
        resumed.restore(state)
        assert head + feed(resumed, *events[cut:]) == expected, cut
        assert resumed.stats == straight.stats


def test_restore_decodes_events_equal_to_the_originals() -> None:
    join = buffer(wait_for_task=True)
    feed(join, decision("d1", 0), outcome("d1", 1))
    resumed = buffer(wait_for_task=True)
    resumed.restore(join.to_state())
    [signal] = feed(resumed, closed("t1", 2))[1:]
    assert isinstance(signal, LearnStep)
    assert signal.decision == wire_event(decode_event(encode_event(decision("d1", 0))))


def test_joined_decision_is_held_as_json_and_parsed_again_for_a_correction() -> None:
    join = buffer()
    feed(join, decision("d1", 0), decision("d2", 0, task="t2"), outcome("d1", 1))
    assert join._decisions["d1"].parsed is None  # joined: only its JSON is held
    assert join._decisions["d2"].parsed == wire_event(decision("d2", 0, task="t2"))  # parsed
    correction = CorrectionEvent(task_id="t1", decision_id="d1", occurred_at=at(2), rating="up")
    expected = LearnCorrection(wire_event(decision("d1", 0)), wire_event(correction))
    assert feed(join, correction) == [expected]
