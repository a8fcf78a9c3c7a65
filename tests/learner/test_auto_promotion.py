"""The learner's rounds on a real DuckDB store and a real MLflow registry: register, wait for a
full window, gate, promote, and step aside when an operator moves the champion."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feature_store.examples import MODELS, decision_event, outcome_event
from feature_store.store import DuckDBFeatureStore
from learner.auto_promotion import GATE_THRESHOLDS, WINDOW_TAG, AutoPromoter, LifecycleSettings
from learner.model_bundle import ModelBundle
from learner.promotion import GateConfig
from learner.registry import CHALLENGER, CHAMPION, ModelRegistry
from learner.vw_model import ExplorationSpec, VWPolicyModel
from router_service.settings import Settings

pytestmark = pytest.mark.integration
SHARED = {"step": {"kind": "control", "log_in": 0.76}, "task": {"d": "eng"}}
ACTIONS = [{"model": {"id": a}, "cost": {"log_cost": -0.5}} for a in MODELS]
GOOD = 2  # large-model succeeds, the others fail


class Lineage:
    """The learner's lineage as the promoter sees it."""

    def __init__(self) -> None:
        self.champion: str | None = None

    def adopt(self, version: str) -> None:
        self.champion = version


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def model_preferring(action: int) -> bytes:
    model = VWPolicyModel.create(ExplorationSpec("epsilon", epsilon=0.3), seed=0)
    for _ in range(30):
        for i in range(len(MODELS)):
            model.learn(SHARED, ACTIONS, i, -1.0 if i == action else 0.0, 1 / 3)
    data = model.to_bytes()
    model.close()
    return data


class Log:
    """Uniformly logged steps decided from now on, written to the store."""

    def __init__(self, store: DuckDBFeatureStore) -> None:
        self.store = store
        self.rng = random.Random(4)
        self.count = 0

    def steps(self, n: int) -> None:
        events = []
        start = datetime.now(UTC) + timedelta(seconds=1)
        for i in range(n):
            chosen = self.rng.randrange(len(MODELS))
            decision = decision_event(
                f"d{self.count}",
                task_id=f"t{self.count // 4}",
                chosen_index=chosen,
                at=start + timedelta(milliseconds=i),
                pmf=[1 / 3] * 3,
                propensity=1 / 3,
            )
            events += [decision, outcome_event(decision, success=chosen == GOOD, cost=0.001)]
            self.count += 1
        self.store.write_events(events)


@pytest.fixture(scope="module")
def models() -> tuple[bytes, bytes]:
    """A model preferring a failing action, and one preferring the good one."""
    return model_preferring(0), model_preferring(GOOD)


Parts = tuple[AutoPromoter, ModelRegistry, Log, Clock, Lineage]


def build(settings: Settings, store: DuckDBFeatureStore, **lifecycle_overrides: int) -> Parts:
    registry = ModelRegistry.embedded(settings.data_dir)
    lifecycle = LifecycleSettings(
        register_every_steps=100,
        register_every_seconds=600,
        min_round_seconds=0,
        min_steps=80,
        min_ess=10,
        **lifecycle_overrides,  # type: ignore[arg-type]
    )
    clock, lineage = Clock(), Lineage()
    promoter = AutoPromoter(
        settings, lifecycle, store, lineage, lambda: registry, clock=clock, background=False
    )
    return promoter, registry, Log(store), clock, lineage


@pytest.fixture
def parts(tmp_path: Path, models: tuple[bytes, bytes]) -> Iterator[Parts]:
    """A learner that started from a model file (so no day-one registration of the prior)."""
    start = tmp_path / "start.vw"
    start.write_bytes(models[0])
    settings = Settings(data_dir=tmp_path / "var", policy_model_path=start)
    with DuckDBFeatureStore(tmp_path / "features.duckdb") as store:
        yield build(settings, store)


def test_rounds_register_gate_and_promote_the_better_model(
    parts: Parts, models: tuple[bytes, bytes]
) -> None:
    promoter, registry, log, _, lineage = parts
    bad, good = models
    promoter.tick(lambda: bad, {}, learned=1)
    assert registry.get_alias_version(CHALLENGER) == "1", "the first publication registers"
    assert not promoter.due(50)
    again = (promoter.settings, promoter.lifecycle, log.store, lineage, lambda: registry)
    restarted = AutoPromoter(*again, background=False)
    restarted.tick(lambda: good, {}, learned=50)
    assert restarted.pending == promoter.pending, "a restart resumes the round"
    assert registry.get_alias_version(CHALLENGER) == "1"
    assert not restarted.due(50) and restarted.due(101)

    promoter.tick(lambda: good, {}, learned=150)  # learned enough, but none decided since
    assert registry.get_alias_version(CHALLENGER) == "1" and "gate.outcome" not in (
        registry.version_tags("1")
    )

    log.steps(120)
    promoter.tick(lambda: good, {}, learned=150)
    assert registry.version_tags("1")["gate.outcome"] == "promoted"  # sanity gate, no champion
    assert (registry.get_alias_version(CHAMPION), lineage.champion) == ("1", "1")
    assert registry.get_alias_version(CHALLENGER) == "2"

    log.steps(120)
    promoter.tick(lambda: good, {}, learned=280)
    assert registry.get_alias_version(CHAMPION) == "2"
    move = registry.history()[-2]  # the promotion, then the registration of version 3
    assert (move.action, move.actor, move.from_version) == ("promote", "promotion-gate", "1")
    assert "pass reward: gain over champion" in move.reason

    log.steps(120)
    promoter.tick(lambda: good, {}, learned=410)  # the same model again: no gain, no move
    tags = registry.version_tags("3")
    assert tags["gate.outcome"] == "refused" and "FAIL reward" in tags["gate.reasons"]
    assert registry.get_alias_version(CHAMPION) == "2"


def test_a_pin_holds_and_an_operator_move_supersedes_the_pending_challenger(
    parts: Parts, models: tuple[bytes, bytes]
) -> None:
    promoter, registry, log, clock, _ = parts
    bad, good = models
    promoter.tick(lambda: bad, {}, learned=1)
    log.steps(120)
    promoter.tick(lambda: good, {}, learned=130)
    log.steps(120)
    registry.set_pin("alice", "hold")
    promoter.tick(lambda: good, {}, learned=260)
    assert registry.version_tags("2")["gate.outcome"] == "passed, champion pinned by alice"
    assert registry.get_alias_version(CHAMPION) == "1"

    registry.promote("2", "alice", "by hand")  # lineage still says 1: the gate must not act
    log.steps(120)
    promoter.tick(lambda: good, {}, learned=390)
    assert "gate.outcome" not in registry.version_tags("3")
    promoter.champion_moved(390)
    assert registry.version_tags("3")["gate.outcome"].startswith("superseded")
    assert promoter.pending is None and not promoter.due(450)
    clock.now += 601  # the longest round is over: a new version even with few outcomes
    assert promoter.due(391)


def test_day_one_registers_the_prior_and_judges_it_on_every_step_logged_so_far(
    tmp_path: Path, models: tuple[bytes, bytes]
) -> None:
    with DuckDBFeatureStore(tmp_path / "features.duckdb") as store:
        promoter, registry, log, _, lineage = build(Settings(data_dir=tmp_path / "var"), store)
        log.steps(120)  # all decided before the learner published anything
        promoter.tick(lambda: models[1], {}, learned=120)
    assert registry.version_tags("1")[WINDOW_TAG] == "all"
    assert registry.version_tags("1")["gate.outcome"] == "promoted"
    assert (registry.get_alias_version(CHAMPION), lineage.champion) == ("1", "1")
    assert registry.get_alias_version(CHALLENGER) == "2"
    assert registry.version_tags("2")[WINDOW_TAG] != "all"


def test_with_a_champion_a_full_window_waits_for_the_shortest_round(tmp_path: Path) -> None:
    lifecycle = LifecycleSettings(register_every_steps=100, min_round_seconds=60, min_steps=10)
    clock, lineage = Clock(), Lineage()
    with DuckDBFeatureStore(tmp_path / "features.duckdb") as store:
        promoter = AutoPromoter(
            Settings(data_dir=tmp_path / "var"),
            lifecycle,
            store,
            lineage,
            lambda: ModelRegistry.embedded(tmp_path / "var"),
            clock=clock,
            background=False,
        )
        promoter._start_round(0)
        assert promoter.due(10), "no champion yet: the first one is not held back"
        lineage.adopt("1")
        assert not promoter.due(500), "a full window, but only 0 s into the round"
        clock.now += 60
        assert promoter.due(100) and not promoter.due(99)


def test_lifecycle_settings_hold_every_gate_threshold_with_the_gate_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert LifecycleSettings().gate_config() == GateConfig()
    assert {f.name for f in GATE_THRESHOLDS} <= set(LifecycleSettings.model_fields)
    monkeypatch.setenv("BUDGET_ROUTER_LIFECYCLE_MIN_ESS", "7")
    monkeypatch.setenv("BUDGET_ROUTER_LIFECYCLE_AUTO_PROMOTE", "false")
    assert LifecycleSettings().gate_config() == GateConfig(enabled=False, min_ess=7.0)


def test_rounds_read_the_champion_once_and_download_no_bundle_they_registered(
    parts: Parts, models: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    promoter, registry, log, _, _ = parts
    bad, good = models
    reads: list[str] = []
    downloads: list[str] = []
    read_alias, load_bundle = registry.get_alias_version, registry.load_bundle

    def counted_read(alias: str) -> str | None:
        reads.append(alias)
        return read_alias(alias)

    def counted_load(version: str) -> ModelBundle:
        downloads.append(version)
        return load_bundle(version)

    monkeypatch.setattr(registry, "get_alias_version", counted_read)
    monkeypatch.setattr(registry, "load_bundle", counted_load)
    promoter.tick(lambda: bad, {}, learned=1)
    champion_reads = []
    for learned in (130, 260, 390):
        log.steps(120)
        reads.clear()
        promoter.tick(lambda: good, {}, learned=learned)
        champion_reads.append(reads.count(CHAMPION))
    assert [registry.version_tags(v)["gate.outcome"] for v in "123"] == [
        "promoted",
        "promoted",
        "refused",
    ]
    # The gate reads the alias once; a promotion reads it again to record what it replaces.
    assert champion_reads == [2, 2, 1]
    assert downloads == [], "every version was registered by this promoter: none is downloaded"


def test_a_round_replays_at_most_max_window_steps_of_its_window(
    tmp_path: Path, models: tuple[bytes, bytes]
) -> None:
    with DuckDBFeatureStore(tmp_path / "features.duckdb") as store:
        settings = Settings(data_dir=tmp_path / "var")
        promoter, registry, log, _, _ = build(settings, store, max_window_steps=90)
        log.steps(120)
        promoter.tick(lambda: models[1], {}, learned=120)
    reasons = registry.version_tags("1")["gate.reasons"]
    assert "samples: 90 logged steps" in reasons, reasons


def test_a_due_round_waits_while_the_learner_is_behind_up_to_its_limit(parts: Parts) -> None:
    promoter, registry, _, clock, _ = parts
    promoter.lifecycle = promoter.lifecycle.model_copy(update={"max_defer_seconds": 60})
    promoter.tick(lambda: b"model", {}, learned=1, behind=True)
    assert registry.get_alias_version(CHALLENGER) is None, "catching up goes first"
    clock.now += 59
    promoter.tick(lambda: b"model", {}, learned=2, behind=True)
    assert registry.get_alias_version(CHALLENGER) is None
    clock.now += 1
    promoter.tick(lambda: b"model", {}, learned=3, behind=True)
    assert registry.get_alias_version(CHALLENGER) == "1", "not longer than max_defer_seconds"


def test_a_round_deferred_while_behind_runs_once_caught_up(parts: Parts) -> None:
    promoter, registry, _, _, _ = parts
    promoter.tick(lambda: b"model", {}, learned=1, behind=True)
    assert registry.get_alias_version(CHALLENGER) is None
    promoter.tick(lambda: b"model", {}, learned=2, behind=False)
    assert registry.get_alias_version(CHALLENGER) == "1"


def test_each_round_waits_afresh_while_the_learner_stays_behind(
    parts: Parts, models: tuple[bytes, bytes]
) -> None:
    promoter, registry, log, clock, _ = parts
    promoter.lifecycle = promoter.lifecycle.model_copy(update={"max_defer_seconds": 60})
    promoter.tick(lambda: models[0], {}, learned=1, behind=True)
    clock.now += 60
    promoter.tick(lambda: models[0], {}, learned=1, behind=True)
    assert registry.get_alias_version(CHALLENGER) == "1"
    log.steps(120)
    promoter.tick(lambda: models[1], {}, learned=150, behind=True)
    assert "gate.outcome" not in registry.version_tags("1"), "the second round waits too"
    clock.now += 60
    promoter.tick(lambda: models[1], {}, learned=150, behind=True)
    assert "gate.outcome" in registry.version_tags("1")
