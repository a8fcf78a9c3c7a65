"""Dashboard summaries over a small known set of events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from feature_store.examples import EPOCH, decision_event, outcome_event, task_closed_event
from feature_store.store import DuckDBFeatureStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBFeatureStore]:
    a1 = decision_event("a1", task_id="ta", at=EPOCH)
    a2 = decision_event("a2", task_id="ta", chosen_index=2, at=EPOCH + timedelta(minutes=10))
    b1 = decision_event(
        "b1",
        task_id="tb",
        trust_domain="legal",
        step_kind="execution",
        at=EPOCH + timedelta(minutes=70),
    )
    events = [
        a1,
        a2,
        b1,
        outcome_event(a1, success=True, cost=0.01),
        outcome_event(a2, success=False, cost=0.30),
        outcome_event(b1, success=True, cost=0.05),
        task_closed_event("ta", success=False),
    ]
    with DuckDBFeatureStore(tmp_path / "f.duckdb") as opened:
        opened.write_events(events)
        yield opened


def test_spend_by_task(store: DuckDBFeatureStore) -> None:
    rows = store.spend_by_task(limit=10)
    assert [r["task_id"] for r in rows] == ["ta", "tb"]
    assert rows[0]["spent_dollars"] == pytest.approx(0.31)
    assert (rows[0]["steps"], rows[0]["successful_steps"]) == (2, 1)
    assert (rows[0]["task_success"], rows[0]["total_dollars"]) == (False, 1.0)
    assert rows[1]["task_success"] is None
    assert rows[0]["first_at"] == EPOCH + timedelta(seconds=1)
    assert len(store.spend_by_task(limit=1)) == 1


def test_spend_by_domain(store: DuckDBFeatureStore) -> None:
    rows = {r["trust_domain"]: r for r in store.spend_by_domain()}
    assert rows["eng"]["spent_dollars"] == pytest.approx(0.31)
    assert (rows["eng"]["steps"], rows["eng"]["tasks"]) == (2, 1)
    assert rows["eng"]["success_rate"] == pytest.approx(0.5)
    assert rows["legal"]["success_rate"] == 1.0


def test_model_mix(store: DuckDBFeatureStore) -> None:
    rows = store.model_mix(bucket_minutes=60)
    assert [(r["bucket"], r["model"], r["decisions"], r["share"]) for r in rows] == [
        (EPOCH, "large-model", 1, 0.5),
        (EPOCH, "small-model", 1, 0.5),
        (EPOCH + timedelta(hours=1), "small-model", 1, 1.0),
    ]
    assert len(store.model_mix(bucket_minutes=24 * 60)) == 2


def test_success_by_model_and_kind(store: DuckDBFeatureStore) -> None:
    rows = {(r["model"], r["step_kind"]): r for r in store.success_by_model_and_kind()}
    assert set(rows) == {
        ("small-model", "control"),
        ("small-model", "execution"),
        ("large-model", "control"),
    }
    assert rows["large-model", "control"]["success_rate"] == 0.0
    assert rows["small-model", "execution"]["mean_cost_dollars"] == pytest.approx(0.05)


def test_recent_decisions_newest_first_with_search(store: DuckDBFeatureStore) -> None:
    assert [r["decision_id"] for r in store.recent_decisions(limit=10)] == ["b1", "a2", "a1"]
    assert [r["decision_id"] for r in store.recent_decisions(limit=2)] == ["b1", "a2"]
    assert [r["decision_id"] for r in store.recent_decisions(10, "LARGE")] == ["a2"]
    assert [r["decision_id"] for r in store.recent_decisions(10, "legal")] == ["b1"]
    assert store.recent_decisions(10, "%") == []
    newest = store.recent_decisions(limit=1)[0]
    assert (newest["success"], newest["cost_dollars"]) == (True, 0.05)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.spend_by_task(limit=0), "limit must be >= 1, got 0"),
        (lambda s: s.model_mix(bucket_minutes=0), "bucket_minutes must be >= 1, got 0"),
        (lambda s: s.recent_decisions(limit=-1), "limit must be >= 1, got -1"),
    ],
)
def test_invalid_arguments_name_the_parameter(store: DuckDBFeatureStore, call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call(store)


def test_spend_of_logged_tasks_keeps_the_tasks_with_a_step_in_the_window(
    store: DuckDBFeatureStore,
) -> None:
    every = {r["task_id"]: r for r in store.spend_by_task(limit=10)}
    assert store.spend_of_logged_tasks() == [every["ta"], every["tb"]]
    assert store.spend_of_logged_tasks(trust_domain="legal") == [every["tb"]]
    later = store.spend_of_logged_tasks(since=EPOCH + timedelta(minutes=5))
    assert later == [every["ta"], every["tb"]], "a task counts whole once one step is in"
    assert store.spend_of_logged_tasks(since=EPOCH + timedelta(minutes=11)) == [every["tb"]]
    assert store.spend_of_logged_tasks(until=EPOCH) == []


def test_a_limit_keeps_the_first_logged_steps_and_their_tasks(store: DuckDBFeatureStore) -> None:
    assert [s.decision_id for s in store.logged_steps(limit=2)] == ["a1", "a2"]
    assert [t["task_id"] for t in store.spend_of_logged_tasks(limit=2)] == ["ta"]
    assert len(store.logged_steps()) == 3
