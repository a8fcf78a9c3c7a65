"""Hundreds of concurrent decisions and outcomes on one task, against a real uvicorn server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from router_service.app import create_app
from router_service.settings import Settings
from tests.conftest import ADMIN_HEADERS, budget, serve_in_thread, step


@pytest.fixture
def server_url(settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(settings)) as url:
        yield url


def test_concurrent_decisions_and_outcomes_balance_to_the_cent(server_url: str) -> None:
    cap = 0.25
    with httpx.Client(base_url=server_url, headers=ADMIN_HEADERS) as client:
        body = {
            "task_id": "busy",
            "task_type": "load",
            "budget": budget(
                total_dollars=cap, reserve_for_final_synthesis=0.03, reserve_for_human_handoff=0.02
            ),
        }
        assert client.post("/v1/tasks", json=body).status_code == 201
    booked: list[Decimal] = []
    actions: list[str] = []
    lock = threading.Lock()

    def agent(worker: int) -> None:
        with httpx.Client(base_url=server_url, timeout=30, headers=ADMIN_HEADERS) as client:
            for i in range(40):
                kind = "final_synthesis" if i == 39 else "execution"
                decision = client.post(
                    "/v1/decide",
                    json={"task_id": "busy", "step": step(kind=kind), "confirmed": True},
                ).json()
                with lock:
                    actions.append(decision["action"])
                if decision["model"] is None:
                    continue
                cost = Decimal(str(round(decision["reserved_dollars"] * (0.5 + worker / 20), 6)))
                response = client.post(
                    "/v1/outcomes",
                    json={
                        "decision_id": decision["decision_id"],
                        "success": True,
                        "quality": 1.0,
                        "input_tokens": 2000,
                        "output_tokens": 300,
                        "cost_dollars": float(cost),
                    },
                )
                assert response.status_code == 202, response.text
                with lock:
                    booked.append(cost)

    threads = [threading.Thread(target=agent, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with httpx.Client(base_url=server_url, headers=ADMIN_HEADERS) as client:
        ledger = client.get("/v1/tasks/busy").json()["ledger"]
    assert len(actions) == 320
    assert Decimal(str(round(ledger["spent_dollars"], 6))) == sum(booked)
    assert ledger["reserved_dollars"] == 0
    assert ledger["spent_dollars"] <= cap
    assert ledger["steps"] == len(booked)
    assert "abort" in actions, "the load should exhaust the ordinary budget"
