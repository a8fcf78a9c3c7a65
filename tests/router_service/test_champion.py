"""The router follows the MLflow champion: load, promote, rollback, hot swap, unreachable."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from learner.model_bundle import ModelBundle
from learner.registry import ModelRegistry
from learner.vw_model import ExplorationSpec
from router_service.app import create_app
from router_service.catalog import Catalog
from router_service.embedded_broker import free_port
from router_service.prior import train_prior
from router_service.settings import DEFAULT_TIER_PREFERENCES, Settings
from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, budget, serve_in_thread, step

MODELS = list(Catalog.from_file(None).snapshot().values())


def bundle(seed: int) -> ModelBundle:
    spec = ExplorationSpec("epsilon", epsilon=0.05)
    model = train_prior(MODELS, DEFAULT_TIER_PREFERENCES, spec, examples_per_kind=3, seed=seed)
    return ModelBundle.from_model(model, spec, allocator_state={"lambdas": {"default": 1.0}})


def register(registry: ModelRegistry, seed: int) -> str:
    return registry.register(
        bundle(seed), {"reward": 0.5}, {"seed": seed}, ("2026-11-01", "2026-11-28"), "test"
    )


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        admin_key=ADMIN_KEY,
        prior_examples_per_kind=5,
        model_poll_seconds=0.2,
        **overrides,
    )


def test_router_swaps_on_promotion_and_rollback_without_failing_requests(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    registry = ModelRegistry.embedded(settings.data_dir)
    first, second = register(registry, 1), register(registry, 2)
    registry.promote(first, "test", "first champion")
    app = create_app(settings)
    failures: list[str] = []
    stop = threading.Event()
    with serve_in_thread(app) as url:
        refresher = app.state.router.refresher
        assert app.state.router.policy.version == f"mlflow:{first}"

        def load() -> None:
            with httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    task_id = f"load-{threading.get_ident()}-{n}"
                    n += 1
                    client.post(
                        "/v1/tasks", json={"task_id": task_id, "task_type": "x", "budget": budget()}
                    )
                    response = client.post("/v1/decide", json={"task_id": task_id, "step": step()})
                    if response.status_code != 200:
                        failures.append(response.text)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        registry.promote(second, "test", "better offline")
        refresher.check_now()
        assert app.state.router.policy.version == f"mlflow:{second}"
        registry.rollback("test", "regression seen")
        refresher.check_now()
        assert app.state.router.policy.version == f"mlflow:{first}"
        stop.set()
        for thread in threads:
            thread.join()
        with httpx.Client(base_url=url, headers=ADMIN_HEADERS) as client:
            ready = client.get("/readyz").json()
    assert failures == []
    assert ready["champion_version"] == first and ready["policy_version"] == f"mlflow:{first}"
    moves = [(m.action, m.to_version) for m in registry.history()]
    assert moves[-1] == ("rollback", first)


def test_unreachable_registry_keeps_the_model_and_reports_stale(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}")
    with TestClient(create_app(settings), headers=ADMIN_HEADERS) as client:
        ready = client.get("/readyz").json()
        assert ready["policy_version"].startswith("prior@")
        assert ready["registry_stale"] is True and ready["registry_error"]
        client.post("/v1/tasks", json={"task_id": "t", "task_type": "x", "budget": budget()})
        assert client.post("/v1/decide", json={"task_id": "t", "step": step()}).status_code == 200


def test_no_registry_means_no_mlflow_and_the_prior(tmp_path: Path) -> None:
    with TestClient(create_app(settings_for(tmp_path)), headers=ADMIN_HEADERS) as client:
        ready = client.get("/readyz").json()
    assert ready["champion_version"] is None and ready["policy_version"].startswith("prior@")
