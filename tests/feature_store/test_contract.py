"""One battery for every FeatureStore: the DuckDB store and the in-memory one must agree."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from feature_store.batch import AnyStoredEvent, WriteResult
from feature_store.examples import EPOCH, mixed_events, outcome_event
from feature_store.memory import InMemoryFeatureStore
from feature_store.protocol import FeatureStore
from feature_store.rolling import RollingWindow
from feature_store.snapshot import load_rolling_snapshot
from feature_store.store import DuckDBFeatureStore
from router_service.events import DecisionEvent, OutcomeEvent

Factory = Callable[[Path], FeatureStore]
FACTORIES: dict[str, Factory] = {
    "duckdb": lambda tmp: DuckDBFeatureStore(tmp / "f.duckdb", window=RollingWindow(5)),
    "memory": lambda tmp: InMemoryFeatureStore(window=RollingWindow(5)),
}


@pytest.fixture(params=sorted(FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    opened = FACTORIES[request.param](tmp_path)
    yield opened
    opened.close()


def noisy_batches(seed: int) -> list[list[AnyStoredEvent]]:
    """A stream with redeliveries, late second outcomes, and random batch boundaries."""
    rng = random.Random(seed)
    events = mixed_events(300, seed=seed)
    answered = {e.decision_id for e in events if isinstance(e, OutcomeEvent)}
    decisions = [e for e in events if isinstance(e, DecisionEvent) and e.decision_id in answered]
    for decision in rng.sample(decisions, 10):
        events.append(
            outcome_event(decision, event_id=f"late-{decision.decision_id}", success=False)
        )
    events += rng.sample(events, 60)
    batches, start = [], 0
    while start < len(events):
        size = rng.randint(1, 80)
        batches.append(events[start : start + size])
        start += size
    return batches


def run(store: FeatureStore, batches: list[list[AnyStoredEvent]]) -> list[WriteResult]:
    return [store.write_events(batch) for batch in batches]


def test_noisy_stream_counts(store: FeatureStore) -> None:
    results = run(store, noisy_batches(seed=11))
    assert sum(r.written for r in results) == 300
    assert sum(r.duplicates for r in results) + sum(len(r.rejected) for r in results) == 70
    rejected = [x for r in results for x in r.rejected]
    assert len({x.event_id for x in rejected}) == 10
    assert all(x.event_id.startswith("late-") for x in rejected)
    assert all("duplicate outcome" in x.reason for x in rejected)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_implementations_agree(tmp_path: Path, seed: int) -> None:
    duck = FACTORIES["duckdb"](tmp_path)
    memory = FACTORIES["memory"](tmp_path)
    try:
        batches = noisy_batches(seed)
        assert run(duck, batches) == run(memory, batches)
        assert duck.rolling_features() == memory.rolling_features()
        assert duck.logged_steps() == memory.logged_steps()
        since, until = EPOCH + timedelta(seconds=20), EPOCH + timedelta(seconds=60)
        assert duck.logged_steps(since, until, "eng") == memory.logged_steps(since, until, "eng")
    finally:
        duck.close()
        memory.close()


def test_logged_steps_are_ordered_and_joined(store: FeatureStore) -> None:
    run(store, noisy_batches(seed=5))
    steps = store.logged_steps()
    assert steps and all(s.model == s.actions[s.chosen_index] for s in steps)
    assert all(s.propensity == s.pmf[s.chosen_index] for s in steps)
    ids = [s.decision_id for s in steps]
    assert ids == sorted(ids, key=lambda i: int(i.split("d")[-1]))


def test_snapshot_round_trip(store: FeatureStore, tmp_path: Path) -> None:
    run(store, noisy_batches(seed=6))
    path = tmp_path / "snapshots" / "rolling.json"
    assert store.export_rolling_features(path) == len(store.rolling_features())
    assert load_rolling_snapshot(path) == {f.key: f for f in store.rolling_features()}
