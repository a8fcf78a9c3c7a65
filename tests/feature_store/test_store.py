"""The DuckDB store on real files: idempotent batches, first-wins outcomes, joins, reopening."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from feature_store.errors import FeatureStoreError, StoreSchemaError, StoreUnavailable
from feature_store.examples import (
    EPOCH,
    decision_event,
    mixed_events,
    outcome_event,
    task_closed_event,
)
from feature_store.store import DuckDBFeatureStore
from router_service.events import CorrectionEvent


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "features.duckdb"


def test_writing_the_same_batch_twice_changes_nothing(db: Path) -> None:
    events = mixed_events(200, seed=1)
    with DuckDBFeatureStore(db) as store:
        first = store.write_events(events)
        counts = store.counts()
        again = store.write_events(events)
        assert (first.written, first.duplicates, first.rejected) == (200, 0, ())
        assert (again.written, again.duplicates, again.rejected) == (0, 200, ())
        assert store.counts() == counts


def test_partial_redelivery_writes_only_the_new_events(db: Path) -> None:
    events = mixed_events(100, seed=2)
    with DuckDBFeatureStore(db) as store:
        store.write_events(events[:60])
        result = store.write_events(events[40:])
        assert (result.written, result.duplicates) == (40, 20)
        assert sum(store.counts().values()) == 100


def test_second_outcome_is_rejected_with_reason_and_first_wins(db: Path) -> None:
    decision = decision_event("d1")
    first = outcome_event(decision, event_id="o1", success=True, cost=0.01)
    late = outcome_event(decision, event_id="o2", success=False, cost=0.5)
    with DuckDBFeatureStore(db) as store:
        store.write_events([decision, first])
        result = store.write_events([late, task_closed_event("t1")])
        assert result.written == 1
        [rejected] = result.rejected
        assert rejected.event_id == "o2"
        assert "duplicate outcome for decision_id 'd1'" in rejected.reason
        [step] = store.logged_steps()
        assert (step.success, step.cost_dollars) == (True, 0.01)
        # The rejected event is rejected again on redelivery, never half-applied.
        assert store.write_events([late]).rejected[0].event_id == "o2"


def test_conflicting_decision_id_and_second_task_close_are_rejected(db: Path) -> None:
    with DuckDBFeatureStore(db) as store:
        store.write_events([decision_event("d1"), task_closed_event("t1")])
        result = store.write_events(
            [
                decision_event("d1", event_id="other"),
                task_closed_event("t1", event_id="close-again"),
                decision_event("d2"),
            ]
        )
        assert result.written == 1
        assert [r.event_id for r in result.rejected] == ["other", "close-again"]
        assert store.counts()["decisions"] == 2


def test_logged_steps_join_decisions_outcomes_and_task_results(db: Path) -> None:
    at = EPOCH
    d1 = decision_event("d1", task_id="t1", chosen_index=1, at=at + timedelta(minutes=2))
    d2 = decision_event("d2", task_id="t1", at=at, trust_domain="legal")
    d3 = decision_event("d3", task_id="t2", at=at + timedelta(minutes=1), policy_version="v2")
    no_outcome = decision_event("d4", task_id="t2", at=at + timedelta(minutes=3))
    events = [
        d1,
        d2,
        d3,
        no_outcome,
        outcome_event(d1, success=False, cost=0.02),
        outcome_event(d2, success=True, cost=0.03),
        outcome_event(d3, success=True, cost=0.04),
        task_closed_event("t1", success=False),
    ]
    with DuckDBFeatureStore(db) as store:
        store.write_events(events)
        steps = store.logged_steps()
        assert [s.decision_id for s in steps] == ["d2", "d3", "d1"]
        by_id = {s.decision_id: s for s in steps}
        assert by_id["d1"].model == "medium-model"
        assert by_id["d1"].propensity == pytest.approx(0.9)
        assert by_id["d1"].pmf == d1.pmf and by_id["d1"].actions == d1.actions
        assert by_id["d1"].shared_features == d1.shared_features
        assert by_id["d1"].action_features == d1.action_features
        assert by_id["d1"].estimated_costs == d1.estimated_costs
        assert (by_id["d1"].success, by_id["d1"].cost_dollars) == (False, 0.02)
        assert by_id["d1"].task_success is False
        assert by_id["d3"].task_success is None
        assert [s.decision_id for s in store.logged_steps(trust_domain="legal")] == ["d2"]
        assert [s.decision_id for s in store.logged_steps(policy_version="v2")] == ["d3"]
        window = store.logged_steps(
            since=at + timedelta(minutes=1), until=at + timedelta(minutes=2)
        )
        assert [s.decision_id for s in window] == ["d3"]


def test_export_logged_steps_writes_parquet(db: Path, tmp_path: Path) -> None:
    d1 = decision_event("d1", estimated_costs=[0.001, None, 0.003])
    with DuckDBFeatureStore(db) as store:
        store.write_events([d1, outcome_event(d1)])
        out = tmp_path / "exports" / "logged.parquet"
        assert store.export_logged_steps(out) == 1
    table = pq.read_table(out)
    row = table.to_pylist()[0]
    assert row["decision_id"] == "d1"
    assert row["estimated_costs"] == [0.001, None, 0.003]
    assert row["pmf"] == pytest.approx(d1.pmf)
    assert "step" in row["shared_features"]
    assert list(out.parent.iterdir()) == [out]


def test_data_survives_reopening(db: Path) -> None:
    events = mixed_events(50, seed=3)
    with DuckDBFeatureStore(db) as store:
        store.write_events(events)
        counts = store.counts()
        steps = store.logged_steps()
    with DuckDBFeatureStore(db) as store:
        assert store.counts() == counts
        assert store.logged_steps() == steps
        assert store.write_events(events).duplicates == 50
    with DuckDBFeatureStore(db, read_only=True) as store:
        assert store.counts() == counts


def test_corrections_are_stored(db: Path) -> None:
    correction = CorrectionEvent(task_id="t1", decision_id="d1", rating="up", note="good")
    with DuckDBFeatureStore(db) as store:
        assert store.write_events([correction, correction]).duplicates == 1
        assert store.counts()["corrections"] == 1


def test_empty_batch_is_a_no_op(db: Path) -> None:
    with DuckDBFeatureStore(db) as store:
        result = store.write_events([])
        assert (result.written, result.duplicates) == (0, 0)


def test_incompatible_schema_version_fails_fast(db: Path) -> None:
    DuckDBFeatureStore(db).close()
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE store_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreSchemaError, match="schema_version '99', expected 1"):
        DuckDBFeatureStore(db)


def test_file_locked_by_another_process_is_retriable(db: Path) -> None:
    DuckDBFeatureStore(db).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, duckdb; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreUnavailable, match="cannot open feature store") as info:
            DuckDBFeatureStore(db)
        assert info.value.retriable and isinstance(info.value, FeatureStoreError)
    finally:
        holder.communicate("", timeout=10)


def test_logged_step_count_counts_what_logged_steps_returns(db: Path) -> None:
    events = mixed_events(300, seed=5)
    times = sorted(e.occurred_at for e in events if e.type == "decision")
    with DuckDBFeatureStore(db) as store:
        store.write_events(events)
        for since in (None, times[len(times) // 2], times[-1] + timedelta(seconds=1)):
            assert store.logged_step_count(since) == len(store.logged_steps(since))
        assert 0 < store.logged_step_count(times[len(times) // 2]) < store.logged_step_count()


def test_a_bad_memory_limit_fails_naming_it(db: Path) -> None:
    with pytest.raises(FeatureStoreError, match="memory_limit 'lots'"):
        DuckDBFeatureStore(db, memory_limit="lots")
