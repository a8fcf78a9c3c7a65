"""Batch planning: duplicates, first-wins rejections and inconsistent decisions."""

from __future__ import annotations

import pytest

from feature_store.batch import ExistingKeys, decision_problem, plan_batch
from feature_store.examples import decision_event, outcome_event, task_closed_event


def test_in_batch_redelivery_is_a_duplicate_not_a_rejection() -> None:
    decision = decision_event("d1")
    plan = plan_batch([decision, decision], ExistingKeys())
    assert plan.decisions == [decision]
    assert (plan.duplicates, plan.rejected) == (1, [])


def test_second_outcome_in_batch_is_rejected_and_first_kept() -> None:
    decision = decision_event("d1")
    first = outcome_event(decision, event_id="o1")
    second = outcome_event(decision, event_id="o2", success=False)
    plan = plan_batch([decision, first, second], ExistingKeys())
    assert plan.outcomes == [first]
    [rejected] = plan.rejected
    assert (rejected.event_id, rejected.event_type) == ("o2", "outcome")
    assert "duplicate outcome for decision_id 'd1'" in rejected.reason
    assert "'o1'" in rejected.reason


def test_stored_keys_decide_duplicates_and_owners() -> None:
    decision = decision_event("d1")
    existing = ExistingKeys(
        event_ids=frozenset({("decision", decision.event_id)}),
        decision_owner={"d1": decision.event_id},
        outcome_owner={"d1": "o-old"},
        task_owner={"t1": "close-old"},
    )
    plan = plan_batch([decision, outcome_event(decision), task_closed_event("t1")], existing)
    assert plan.written == 0
    assert plan.duplicates == 1
    assert [r.event_type for r in plan.rejected] == ["outcome", "task_closed"]
    assert "task 't1' already closed by event 'close-old'" in plan.rejected[1].reason


def test_event_ids_are_unique_per_event_type() -> None:
    decision = decision_event("d1", event_id="same")
    outcome = outcome_event(decision, event_id="same")
    plan = plan_batch([decision, outcome], ExistingKeys())
    assert (plan.written, plan.duplicates) == (2, 0)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"pmf": [1.0]}, "pmf has 1 entries, expected 3"),
        ({"estimated_costs": [None]}, "estimated_costs has 1 entries"),
        ({"action_features": []}, "action_features has 0 entries"),
        ({"chosen_index": 5}, "chosen_index 5 out of range"),
        ({"model": "other"}, "model 'other' is not actions"),
        ({"pmf": [0.9, 0.9, 0.9], "propensity": 0.9}, "pmf sums to 2.7"),
        ({"propensity": 0.5}, "propensity 0.5 differs from pmf"),
    ],
)
def test_inconsistent_decisions_are_rejected(overrides: dict[str, object], match: str) -> None:
    decision = decision_event("d1").model_copy(update=overrides)
    problem = decision_problem(decision)
    assert problem is not None and match in problem
    plan = plan_batch([decision], ExistingKeys())
    assert plan.written == 0 and match in plan.rejected[0].reason


def test_consistent_decision_has_no_problem() -> None:
    assert decision_problem(decision_event("d1", chosen_index=2)) is None
