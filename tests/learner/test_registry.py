"""The MLflow registry against a real SQLite store: register, load, promote, roll back, audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import mlflow
import pytest

from learner.model_bundle import BundleError, ModelBundle
from learner.registry import (
    CHALLENGER,
    CHAMPION,
    ModelRegistry,
    NoPreviousChampion,
    RegistryNotFound,
    RegistryUnavailable,
)
from learner.vw_model import ExplorationSpec, VWPolicyModel
from router_service.embedded_broker import free_port

pytestmark = pytest.mark.integration

SHARED = {"step": {"kind": "control", "type": "planning"}, "task": {"domain": "eng"}}
ACTIONS = [{"model": {"id": "small"}}, {"model": {"id": "medium"}}, {"model": {"id": "large"}}]
WINDOW = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
_names = count()


def trained_model(best: int, seed: int = 3) -> VWPolicyModel:
    """A tiny VW model that has learned to prefer action ``best``."""
    model = VWPolicyModel.create(ExplorationSpec(epsilon=0.1), seed=seed)
    for _ in range(20):
        for index in range(len(ACTIONS)):
            model.learn(SHARED, ACTIONS, index, -1.0 if index == best else 0.0, 1 / 3)
    return model


def make_bundle(best: int) -> ModelBundle:
    model = trained_model(best)
    bundle = ModelBundle.from_model(
        model,
        ExplorationSpec(epsilon=0.1),
        allocator_state={"eng": 0.25, "default": 1.0},
        metadata={"best": best},
    )
    model.close()
    return bundle


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def registry(data_dir: Path) -> ModelRegistry:
    """A fresh registered-model name in the module's shared store: tests stay independent."""
    return ModelRegistry.embedded(data_dir, model_name=f"router-{next(_names)}")


@pytest.fixture(scope="module")
def bundles() -> list[ModelBundle]:
    return [make_bundle(best) for best in range(3)]


def register(registry: ModelRegistry, bundle: ModelBundle) -> str:
    return registry.register(bundle, {"snips": 0.7, "ess": 250.0}, {"n": 500}, WINDOW, "test")


def test_bundle_round_trips_through_a_directory(tmp_path: Path) -> None:
    bundle = make_bundle(1)
    bundle.save_dir(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "allocator.json",
        "bundle.json",
        "model.vw",
    ]
    assert ModelBundle.load_dir(tmp_path / "b") == bundle
    assert bundle.exploration_spec() == ExplorationSpec(epsilon=0.1)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"vw_model_bytes": b""}, "vw_model_bytes is empty"),
        ({"feature_schema_version": 0}, "feature_schema_version must be >= 1"),
        ({"feature_schema_version": "1"}, "feature_schema_version must be an int"),
        ({"exploration": {"eps": 0.1}}, "exploration has unexpected keys"),
    ],
)
def test_invalid_bundles_are_refused(overrides: dict[str, object], match: str) -> None:
    values: dict[str, object] = {
        "vw_model_bytes": b"x",
        "allocator_state": {},
        "feature_schema_version": 1,
        "exploration": {},
        "metadata": {},
    }
    with pytest.raises(BundleError, match=match):
        ModelBundle(**{**values, **overrides})  # type: ignore[arg-type]


def test_load_dir_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"has no model\.vw"):
        ModelBundle.load_dir(tmp_path)


def test_register_sets_challenger_and_logs_the_run(
    registry: ModelRegistry, bundles: list[ModelBundle], data_dir: Path
) -> None:
    version = register(registry, bundles[0])
    assert registry.get_alias_version(CHALLENGER) == version
    assert registry.get_alias_version(CHAMPION) is None
    loaded = registry.load_bundle(CHALLENGER)
    assert loaded == bundles[0]
    run = registry._client.get_run(
        registry._client.get_model_version(registry.model_name, version).run_id
    )
    assert run.data.metrics == {"snips": 0.7, "ess": 250.0}
    assert run.data.params["data_window_start"] == WINDOW[0].isoformat()
    assert run.data.params["feature_schema_version"] == "1"
    assert run.data.tags["source"] == "test"
    artifacts = list((data_dir / "mlruns").glob("*/artifacts/model/artifacts/bundle/model.vw"))
    assert artifacts, "artifacts must live under <data_dir>/mlruns"
    [move] = registry.history()
    assert (move.alias, move.action, move.from_version, move.to_version) == (
        CHALLENGER,
        "register",
        None,
        version,
    )


def test_pyfunc_load_model_predicts_like_the_vw_model(
    registry: ModelRegistry,
    bundles: list[ModelBundle],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    version = register(registry, bundles[2])
    registry.promote(version, "alice", "first champion")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry.registry_uri)
    pyfunc = mlflow.pyfunc.load_model(
        f"models:/{registry.model_name}@champion", dst_path=str(tmp_path)
    )
    original = bundles[2].policy_model()
    expected = original.predict(SHARED, ACTIONS)
    original.close()
    as_dicts = pyfunc.predict([{"shared_features": SHARED, "action_features": ACTIONS}])
    as_json = pyfunc.predict(
        {"shared_features": [json.dumps(SHARED)], "action_features": [json.dumps(ACTIONS)]}
    )
    assert as_dicts == as_json == [pytest.approx(expected)]
    assert max(range(3), key=expected.__getitem__) == 2


def test_promote_and_rollback_walk_back_through_champions(
    registry: ModelRegistry, bundles: list[ModelBundle]
) -> None:
    v1, v2, v3 = (register(registry, bundle) for bundle in bundles)
    with pytest.raises(NoPreviousChampion, match="no previous champion"):
        registry.rollback("ops", "nothing to undo")
    registry.promote(v1, "gate", "first")
    registry.promote(v2, "gate", "better")
    registry.promote(v3, "gate", "better still")
    assert registry.previous_champion() == v2

    move = registry.rollback("bob", "v3 overspends in prod")
    assert registry.get_alias_version(CHAMPION) == v2
    assert (move.from_version, move.to_version, move.actor, move.reason) == (
        v3,
        v2,
        "bob",
        "v3 overspends in prod",
    )
    registry.rollback("bob", "v2 too")
    assert registry.get_alias_version(CHAMPION) == v1
    with pytest.raises(NoPreviousChampion):
        registry.rollback("bob", "and v1")
    assert registry.load_bundle(CHAMPION).metadata == {"best": 0}

    champion_moves = [
        (m.action, m.from_version, m.to_version, m.actor)
        for m in registry.history()
        if m.alias == CHAMPION
    ]
    assert champion_moves == [
        ("promote", None, v1, "gate"),
        ("promote", v1, v2, "gate"),
        ("promote", v2, v3, "gate"),
        ("rollback", v3, v2, "bob"),
        ("rollback", v2, v1, "bob"),
    ]
    assert [m.to_version for m in registry.history() if m.alias == CHALLENGER] == [v1, v2, v3]
    assert all(m.at.tzinfo is not None for m in registry.history())


def test_set_alias_records_the_move(registry: ModelRegistry, bundles: list[ModelBundle]) -> None:
    version = register(registry, bundles[0])
    move = registry.set_alias("canary", version, "carol", "10% traffic")
    assert registry.get_alias_version("canary") == version
    assert registry.history()[-1] == move


def test_unknown_versions_and_aliases_are_not_found(registry: ModelRegistry) -> None:
    assert registry.history() == []
    with pytest.raises(RegistryNotFound, match="alias 'champion' of model 'router-"):
        registry.load_bundle(CHAMPION)
    with pytest.raises(RegistryNotFound, match="version 99"):
        registry.promote("99", "ops", "typo")
    with pytest.raises(ValueError, match="actor and reason are required"):
        registry.promote("1", "", "")


def test_unreachable_server_is_a_retriable_error() -> None:
    registry = ModelRegistry(f"http://127.0.0.1:{free_port()}", probe_timeout=1.0)
    with pytest.raises(RegistryUnavailable, match="unreachable") as caught:
        registry.get_alias_version(CHAMPION)
    assert caught.value.retriable
