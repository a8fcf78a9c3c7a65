"""``budget-router up`` SIGKILLed mid-load and started again keeps its budget truth.

The embedded SQLite ledger still knows every open task, its spend and its open reservations;
outcomes for decisions made before the kill settle after it; an exhausted task still refuses
and a healthy one still proceeds.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from router_service.embedded_broker import free_port
from tests.conftest import ADMIN_HEADERS, budget, step
from tests.router_processes import router_env, router_process, wait_refused

pytestmark = pytest.mark.integration
AGENTS = 6
KILL_AFTER = 120


class Agents:
    """Agents deciding and reporting (every other decision) until the stack dies."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reserved: dict[str, tuple[str, float]] = {}  # decision -> (task, dollars)
        self.booked: dict[str, float] = {}
        self.decisions = 0
        self.lock = threading.Lock()
        self.enough = threading.Event()

    def run(self, task_id: str) -> None:
        with httpx.Client(base_url=self.url, headers=ADMIN_HEADERS, timeout=10) as client:
            try:
                for n in range(10_000):
                    body = {"task_id": task_id, "step": step(), "confirmed": True}
                    decision = client.post("/v1/decide", json=body).json()
                    with self.lock:
                        self.decisions += 1
                        if self.decisions >= KILL_AFTER:
                            self.enough.set()
                    if decision["model"] is None:
                        continue
                    with self.lock:
                        self.reserved[decision["decision_id"]] = (
                            task_id,
                            decision["reserved_dollars"],
                        )
                    if n % 2:
                        self.report(client, decision["decision_id"], decision["reserved_dollars"])
            except httpx.TransportError:
                return  # the stack was killed

    def report(self, client: httpx.Client, decision_id: str, reserved: float) -> None:
        cost = round(reserved / 3, 6)
        answer = client.post("/v1/outcomes", json=outcome(decision_id, cost))
        assert answer.status_code == 202, answer.text
        with self.lock:
            self.booked[decision_id] = cost


def outcome(decision_id: str, cost: float) -> dict[str, object]:
    return {
        "decision_id": decision_id,
        "success": True,
        "quality": 0.8,
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_dollars": cost,
    }


def open_tasks(client: httpx.Client) -> None:
    for n in range(AGENTS):
        body = {"task_id": f"a{n}", "task_type": "load", "budget": budget(total_dollars=50.0)}
        assert client.post("/v1/tasks", json=body).status_code == 201
    tight = {
        "task_id": "tight",
        "task_type": "x",
        "budget": budget(
            total_dollars=0.02, reserve_for_final_synthesis=0.005, reserve_for_human_handoff=0.002
        ),
    }
    assert client.post("/v1/tasks", json=tight).status_code == 201
    for _ in range(20):
        body = {"task_id": "tight", "step": step(), "confirmed": True}
        if client.post("/v1/decide", json=body).json()["action"] == "abort":
            return
    raise AssertionError("the tight task never ran out")


def stored(ledger: Path, task_id: str) -> tuple[dict, dict]:
    """Settlements (decision -> (expired, cost)) and open reservations (decision -> dollars)."""
    with sqlite3.connect(ledger) as conn:
        settled = conn.execute(
            "SELECT decision_id, expired, cost_dollars FROM ledger_settlements WHERE task_id = ?",
            (task_id,),
        ).fetchall()
        held = conn.execute(
            "SELECT decision_id, dollars FROM ledger_reservations WHERE task_id = ?", (task_id,)
        ).fetchall()
    conn.close()
    return {d: (bool(e), c) for d, e, c in settled}, dict(held)


def test_up_killed_mid_load_restarts_with_every_task_spend_and_reservation(
    tmp_path: Path,
) -> None:
    port, data_dir = free_port(), tmp_path / "var"
    url = f"http://127.0.0.1:{port}"
    env = router_env()
    with router_process("up", port, data_dir, env, tmp_path / "up1.log") as stack:
        with httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=10) as client:
            open_tasks(client)
        agents = Agents(url)
        threads = [threading.Thread(target=agents.run, args=(f"a{n}",)) for n in range(AGENTS)]
        for thread in threads:
            thread.start()
        assert agents.enough.wait(timeout=120), "the load did not get going"
        stack.send_signal(signal.SIGKILL)
        for thread in threads:
            thread.join(timeout=60)
        assert stack.wait(timeout=10) == -signal.SIGKILL
    wait_refused(url)  # the router child died with its parent
    with router_process("up", port, data_dir, env, tmp_path / "up2.log"):
        client = httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=10)
        ledger_file = data_dir / "ledger.sqlite3"
        unreported = []
        for n in range(AGENTS):
            task = client.get(f"/v1/tasks/a{n}").json()
            assert task["status"] == "open"
            settled, held = stored(ledger_file, f"a{n}")
            mine = {d for d, (t, _) in agents.reserved.items() if t == f"a{n}"}
            assert mine <= set(settled) | set(held), "a reservation the agent was given is lost"
            for decision_id in mine & set(agents.booked):
                assert settled[decision_id] == (False, agents.booked[decision_id])
            ledger = task["ledger"]
            assert ledger["spent_dollars"] == pytest.approx(sum(c for _, c in settled.values()))
            assert ledger["reserved_dollars"] == pytest.approx(sum(held.values()))
            assert ledger["steps"] == len(settled) + len(held)
            unreported += [(d, agents.reserved[d][1]) for d in sorted(mine & set(held))]
        assert unreported, "the kill should leave open reservations behind"
        for decision_id, reserved in unreported:  # decided before the kill, reported after
            cost = round(reserved / 3, 6)
            assert client.post("/v1/outcomes", json=outcome(decision_id, cost)).status_code == 202
            settled, _ = stored(ledger_file, agents.reserved[decision_id][0])
            assert settled[decision_id] == (False, cost)
        some = next(iter(agents.booked))
        assert client.post("/v1/outcomes", json=outcome(some, 0.1)).status_code == 409
        tight = client.post("/v1/decide", json={"task_id": "tight", "step": step()}).json()
        assert tight["action"] == "abort"
        healthy = client.post("/v1/decide", json={"task_id": "a0", "step": step()}).json()
        assert healthy["model"] is not None
        client.close()
