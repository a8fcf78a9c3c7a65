"""End to end on the real embedded broker: HTTP decisions and outcomes -> learner -> new model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from feature_store.store import DuckDBFeatureStore
from learner.online import run_online_learner
from learner.service import read_status
from router_service.app import create_app
from router_service.embedded_broker import EmbeddedBroker, ensure_topics
from router_service.settings import KafkaSettings, Settings
from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, budget, step

pytestmark = pytest.mark.integration


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


def test_outcomes_posted_over_http_change_the_served_model(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "SESSION_TIMEOUT_MS": "2000",
        "HEARTBEAT_INTERVAL_MS": "300",
        "MAX_POLL_INTERVAL_MS": "3000",
        "TASK_CLOSE_WAIT_SECONDS": "0",
        "PUBLISH_INTERVAL_SECONDS": "0.2",
    }.items():
        monkeypatch.setenv(f"BUDGET_ROUTER_LEARNER_{name}", value)
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    ensure_topics(broker.bootstrap, [kafka.events_topic, kafka.dead_letter_topic])
    settings = Settings(
        data_dir=tmp_path / "var",
        kafka=kafka,
        admin_key=ADMIN_KEY,
        prior_examples_per_kind=10,
        model_poll_seconds=0.1,
    )
    stop = threading.Event()
    learner = threading.Thread(
        target=run_online_learner, args=(settings, broker.bootstrap, stop), daemon=True
    )
    learner.start()
    try:
        with TestClient(create_app(settings), headers=ADMIN_HEADERS) as client:
            first_version = client.get("/readyz").json()["policy_version"]
            decided = 0
            for t in range(12):
                task_id = f"loop-{t}"
                client.post(
                    "/v1/tasks", json={"task_id": task_id, "task_type": "x", "budget": budget()}
                )
                for _ in range(5):
                    decision = client.post(
                        "/v1/decide", json={"task_id": task_id, "step": step()}
                    ).json()
                    cheap = decision["model"] == "gpt-5-nano"
                    outcome = client.post(
                        "/v1/outcomes",
                        json={
                            "decision_id": decision["decision_id"],
                            "success": cheap,
                            "quality": 1.0 if cheap else 0.1,
                            "input_tokens": 2000,
                            "output_tokens": 300,
                        },
                    )
                    assert outcome.status_code == 202
                    decided += 1
                closed = client.post(
                    f"/v1/tasks/{task_id}/close", json={"success": True, "quality": 0.8}
                )
                assert closed.status_code == 200

            def served() -> str:
                return str(client.get("/readyz").json()["policy_version"])

            wait_for(lambda: served() != first_version, 60, "a learned snapshot to be served")
            assert served().startswith(first_version + "+s")
            wait_for(
                lambda: (read_status(settings.data_dir) or {}).get("learned_steps", 0) >= decided,
                60,
                "the learner to learn every step",
            )
            status = read_status(settings.data_dir) or {}
            assert status["dead_lettered"] == 0
    finally:
        stop.set()
        learner.join(timeout=30)
    with DuckDBFeatureStore(settings.data_dir / "features.duckdb", read_only=True) as store:
        steps = store.logged_steps()
    assert len(steps) == decided
    assert {s.task_id for s in steps} == {f"loop-{t}" for t in range(12)}
