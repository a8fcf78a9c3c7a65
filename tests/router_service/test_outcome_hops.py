"""On PostgreSQL an outcome for a decision this router remembers reads nothing before settling."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from router_service import state as state_module
from router_service.app import create_app
from router_service.settings import Settings
from tests.conftest import ADMIN_HEADERS, budget, step


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the calls handed to worker threads by the router's state."""
    names: list[str] = []
    real = asyncio.to_thread

    async def counted(call, *args):  # type: ignore[no-untyped-def]
        names.append(call.__name__)
        return await real(call, *args)

    monkeypatch.setattr(state_module.asyncio, "to_thread", counted)
    return names


def replica(settings: Settings, postgres_uri: str, data_dir: Path) -> TestClient:
    update = {"ledger_uri": postgres_uri, "data_dir": data_dir}
    return TestClient(create_app(settings.model_copy(update=update)), headers=ADMIN_HEADERS)


@pytest.fixture
def replicas(settings: Settings, postgres_uri: str, tmp_path: Path) -> Iterator[tuple]:
    with (
        replica(settings, postgres_uri, tmp_path / "a") as a,
        replica(settings, postgres_uri, tmp_path / "b") as b,
    ):
        yield a, b


def outcome(decision: dict) -> dict:
    return {"decision_id": decision["decision_id"], "success": True, "quality": 0.9,
            "input_tokens": 100, "output_tokens": 50}  # fmt: skip


def test_an_outcome_reported_where_it_was_decided_needs_no_worker_thread(
    replicas: tuple[TestClient, TestClient], hops: list[str]
) -> None:
    a, b = replicas
    task = a.post("/v1/tasks", json={"task_type": "qa", "budget": budget()}).json()
    first = a.post("/v1/decide", json={"task_id": task["task_id"], "step": step()}).json()
    second = a.post("/v1/decide", json={"task_id": task["task_id"], "step": step()}).json()
    hops.clear()
    assert a.post("/v1/outcomes", json=outcome(first)).status_code == 202
    assert hops == []
    # The other replica never saw the decision: it reads it from the store on a worker thread.
    assert b.post("/v1/outcomes", json=outcome(second)).status_code == 202
    assert hops == ["visible_decision"]
