"""Rolling features on a small hand-made stream of outcomes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from feature_store.examples import EPOCH, decision_event, outcome_event
from feature_store.memory import InMemoryFeatureStore
from feature_store.rolling import RollingWindow
from feature_store.snapshot import load_rolling_snapshot
from feature_store.store import DuckDBFeatureStore
from router_service.events import OutcomeEvent


def _stream() -> list[OutcomeEvent]:
    """Four outcomes of small-model planning in eng (oldest first), one of large-model."""
    small = [
        (False, 1.00, 4_000.0),
        (True, 0.01, 1_000.0),
        (True, 0.02, None),
        (False, 0.03, 3_000.0),
    ]
    events = []
    for i, (success, cost, latency) in enumerate(small):
        decision = decision_event(f"s{i}", at=EPOCH + timedelta(minutes=i))
        events.append(outcome_event(decision, success=success, cost=cost, latency_ms=latency))
    large = decision_event("l0", chosen_index=2, step_type="extraction", trust_domain="legal")
    events.append(outcome_event(large, success=True, cost=0.5, latency_ms=None))
    return events


def test_window_keeps_the_last_n_outcomes_per_key(tmp_path: Path) -> None:
    stream = _stream()
    with DuckDBFeatureStore(tmp_path / "f.duckdb", window=RollingWindow(3)) as store:
        # Written newest first to show the window follows event time, not arrival order.
        store.write_events(stream[::-1])
        features = {f.key: f for f in store.rolling_features()}
    assert set(features) == {
        ("small-model", "planning", "eng"),
        ("large-model", "extraction", "legal"),
    }
    small = features["small-model", "planning", "eng"]
    assert (small.n, small.successes, small.n_total, small.window) == (3, 2, 4, 3)
    assert small.success_rate == pytest.approx(2 / 3)
    assert small.mean_cost_dollars == pytest.approx(0.02)
    assert small.mean_quality == pytest.approx((0.9 + 0.9 + 0.2) / 3)
    assert small.mean_latency_s == pytest.approx(2.0)  # (1.0 + 3.0) / 2, the missing one skipped
    assert small.last_outcome_at == EPOCH + timedelta(minutes=3, seconds=1)
    large = features["large-model", "extraction", "legal"]
    assert (large.n, large.success_rate, large.mean_latency_s) == (1, 1.0, None)


def test_wide_window_covers_all_outcomes(tmp_path: Path) -> None:
    with DuckDBFeatureStore(tmp_path / "f.duckdb") as store:
        store.write_events(_stream())
        small = {f.key: f for f in store.rolling_features()}["small-model", "planning", "eng"]
    assert (small.n, small.successes) == (4, 2)
    assert small.mean_cost_dollars == pytest.approx(1.06 / 4)


def test_export_then_load_gives_the_same_features(tmp_path: Path) -> None:
    snapshot = tmp_path / "snap" / "rolling.json"
    with DuckDBFeatureStore(tmp_path / "f.duckdb", window=RollingWindow(3)) as store:
        store.write_events(_stream())
        assert store.export_rolling_features(snapshot) == 2
        expected = {f.key: f for f in store.rolling_features()}
    assert load_rolling_snapshot(snapshot) == expected


def test_empty_store_has_no_features(tmp_path: Path) -> None:
    with DuckDBFeatureStore(tmp_path / "f.duckdb") as store:
        assert store.rolling_features() == []


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rolling window outcomes must be >= 1, got 0"):
        RollingWindow(0)


def test_features_brought_up_to_date_batch_by_batch_equal_a_fresh_computation(
    tmp_path: Path,
) -> None:
    path, window = tmp_path / "f.duckdb", RollingWindow(3)
    memory = InMemoryFeatureStore(window=window)
    with DuckDBFeatureStore(path, window=window) as store:
        for event in _stream()[::-1]:  # older outcomes arrive later: they must not displace
            store.write_events([event])
            memory.write_events([event])
            live = store.rolling_features()
            assert live == memory.rolling_features()
    with DuckDBFeatureStore(path, window=window) as reopened:
        assert reopened.rolling_features() == live
    small = {f.key: f for f in live}["small-model", "planning", "eng"]
    assert (small.n, small.n_total) == (3, 4)
