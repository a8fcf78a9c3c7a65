"""The champion watcher on a real MLflow store: promotion, rollback, an unreachable server."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from learner.model_bundle import ModelBundle
from learner.registry import ModelRegistry, RegistryUnavailable
from learner.vw_model import ExplorationSpec, VWPolicyModel
from router_service.embedded_broker import free_port
from router_service.model_watcher import ChampionWatcher

pytestmark = pytest.mark.integration


class Recorder:
    """Collects (version, bundle) handed to the callback, as the router's swap would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ModelBundle]] = []
        self.changed = threading.Condition()

    def __call__(self, bundle: ModelBundle, version: str) -> None:
        with self.changed:
            self.calls.append((version, bundle))
            self.changed.notify_all()

    def wait_for(self, version: str, timeout: float = 10.0) -> None:
        with self.changed:
            ok = self.changed.wait_for(
                lambda: bool(self.calls) and self.calls[-1][0] == version, timeout
            )
        assert ok, f"watcher never delivered version {version}; got {self.calls}"

    @property
    def versions(self) -> list[str]:
        return [version for version, _ in self.calls]


class Switchable:
    """A real registry that a test can take offline, as a failing network would."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.down = False

    def get_alias_version(self, alias: str) -> str | None:
        if self.down:
            raise RegistryUnavailable("MLflow server is unreachable (test)")
        return self.registry.get_alias_version(alias)

    def load_bundle(self, version_or_alias: str) -> ModelBundle:
        return self.registry.load_bundle(version_or_alias)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    return ModelRegistry.embedded(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def versions(registry: ModelRegistry) -> list[str]:
    found = []
    window = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    for seed in (1, 2):
        model = VWPolicyModel.create(ExplorationSpec(), seed=seed)
        bundle = ModelBundle.from_model(
            model, ExplorationSpec(), allocator_state={}, metadata={"seed": seed}
        )
        model.close()
        found.append(registry.register(bundle, {}, {}, window, "watcher-test"))
    return found


def test_check_now_follows_promotion_and_rollback(
    registry: ModelRegistry, versions: list[str]
) -> None:
    v1, v2 = versions
    registry.promote(v1, "test", "start")
    recorder = Recorder()
    watcher = ChampionWatcher(registry, recorder)

    assert watcher.check_now()
    assert not watcher.check_now(), "an unchanged alias must not reload the bundle"
    registry.promote(v2, "test", "newer")
    assert watcher.check_now()
    registry.rollback("test", "regression")
    assert watcher.check_now()

    assert recorder.versions == [v1, v2, v1]
    assert [bundle.metadata["seed"] for _, bundle in recorder.calls] == [1, 2, 1]
    status = watcher.status()
    assert (status["version"], status["stale"], status["last_error"]) == (v1, False, None)
    assert status["last_checked_at"] is not None


def test_background_thread_notices_a_promotion(
    registry: ModelRegistry, versions: list[str]
) -> None:
    v1, v2 = versions
    registry.promote(v1, "test", "start")
    recorder = Recorder()
    watcher = ChampionWatcher(registry, recorder, poll_seconds=0.05)
    watcher.start()
    try:
        recorder.wait_for(v1)
        registry.promote(v2, "test", "promoted while serving")
        recorder.wait_for(v2)
        registry.rollback("test", "rolled back while serving")
        recorder.wait_for(v1)
    finally:
        watcher.stop()
    assert recorder.versions == [v1, v2, v1]


def test_unreachable_tracking_server_keeps_the_model_and_reports_stale() -> None:
    unreachable = ModelRegistry(f"http://127.0.0.1:{free_port()}", probe_timeout=1.0)
    recorder = Recorder()
    watcher = ChampionWatcher(unreachable, recorder, current_version="prior@abc")
    started = time.monotonic()
    assert not watcher.check_now()
    assert time.monotonic() - started < 5, "an unreachable server must fail fast"
    status = watcher.status()
    assert status["version"] == "prior@abc"
    assert status["stale"] is True
    assert "RegistryUnavailable" in status["last_error"]
    assert "unreachable" in status["last_error"]
    assert status["last_success_at"] is None
    assert recorder.calls == []


def test_outage_after_success_keeps_the_model_then_recovers(
    registry: ModelRegistry, versions: list[str]
) -> None:
    v1, v2 = versions
    registry.promote(v1, "test", "start")
    switchable = Switchable(registry)
    recorder = Recorder()
    watcher = ChampionWatcher(switchable, recorder)
    assert watcher.check_now()
    healthy_at = watcher.status()["last_success_at"]

    switchable.down = True
    registry.promote(v2, "test", "promoted during the outage")
    assert not watcher.check_now()
    assert watcher.status()["stale"] and watcher.version == v1
    assert watcher.status()["last_success_at"] == healthy_at

    switchable.down = False
    assert watcher.check_now()
    assert (watcher.version, watcher.stale, recorder.versions) == (v2, False, [v1, v2])


def test_a_failing_callback_keeps_the_old_version(
    registry: ModelRegistry, versions: list[str]
) -> None:
    registry.promote(versions[0], "test", "start")

    def refuse(bundle: ModelBundle, version: str) -> None:
        raise RuntimeError("feature schema 1 not supported")

    watcher = ChampionWatcher(registry, refuse, current_version="prior@abc")
    assert not watcher.check_now()
    assert watcher.version == "prior@abc"
    assert "feature schema 1 not supported" in watcher.status()["last_error"]


def test_poll_seconds_must_be_positive(registry: ModelRegistry) -> None:
    with pytest.raises(ValueError, match="poll_seconds must be > 0"):
        ChampionWatcher(registry, Recorder(), poll_seconds=0)
