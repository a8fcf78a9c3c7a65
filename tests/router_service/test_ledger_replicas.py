"""Two ``budget-router serve`` replicas on one PostgreSQL ledger: one budget truth.

500 decisions and their outcomes spread over both replicas against one task book exactly what
was reported, within the caps to the cent, each decision at most once; a replica SIGKILLed in
the middle of the burst loses nothing that was booked.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from router_service.embedded_broker import free_port
from router_service.ledger_postgres import PostgresLedgerStore
from tests.conftest import ADMIN_HEADERS, budget, step
from tests.router_processes import router_env, router_process, wait_refused

pytestmark = pytest.mark.integration
CAP = 0.5
WORKERS = 10
PER_WORKER = 50  # 500 decisions


@dataclass
class Burst:
    """What the agents were told: decisions that reserved, and outcomes accepted."""

    reserved: dict[str, float] = field(default_factory=dict)
    booked: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    decisions: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def replicas(postgres_uri: str, tmp_path: Path) -> Iterator[list[tuple[str, object]]]:
    env = router_env(BUDGET_ROUTER_LEDGER_URI=postgres_uri)
    with ExitStack() as stack:
        started = []
        for n in range(2):
            port = free_port()
            process = stack.enter_context(
                router_process("serve", port, tmp_path / f"var{n}", env, tmp_path / f"r{n}.log")
            )
            started.append((f"http://127.0.0.1:{port}", process))
        yield started


def open_task(url: str) -> None:
    body = {
        "task_id": "shared",
        "task_type": "load",
        "budget": budget(
            total_dollars=CAP, reserve_for_final_synthesis=0.05, reserve_for_human_handoff=0.02
        ),
    }
    assert httpx.post(f"{url}/v1/tasks", json=body, headers=ADMIN_HEADERS).status_code == 201


def run_burst(urls: list[str], burst: Burst, alive: list[bool], kill_at: int | None = None,
              kill: object = None) -> None:  # fmt: skip
    """Each agent decides on one replica and reports on the other, switching as it goes."""
    killed = threading.Event()

    def post(client: httpx.Client, start: int, path: str, body: dict) -> httpx.Response | None:
        for offset in range(len(urls)):
            n = (start + offset) % len(urls)
            if not alive[n]:
                continue
            try:
                return client.post(f"{urls[n]}{path}", json=body)
            except httpx.TransportError:
                alive[n] = False  # killed: the agent's retry goes to the other replica
                return None
        raise AssertionError("no replica left")

    def agent(worker: int) -> None:
        rng = random.Random(worker)
        with httpx.Client(headers=ADMIN_HEADERS, timeout=30) as client:
            for i in range(PER_WORKER):
                kind = "final_synthesis" if i == PER_WORKER - 1 else "execution"
                body = {"task_id": "shared", "step": step(kind=kind), "confirmed": True}
                answer = post(client, worker + i, "/v1/decide", body)
                with burst.lock:
                    burst.decisions += 1
                    if kill_at is not None and burst.decisions == kill_at and not killed.is_set():
                        killed.set()
                        kill()  # type: ignore[operator]
                if answer is None:
                    continue
                assert answer.status_code == 200, answer.text
                decision = answer.json()
                if decision["model"] is None:
                    with burst.lock:
                        burst.refused += 1
                    continue
                with burst.lock:
                    burst.reserved[decision["decision_id"]] = decision["reserved_dollars"]
                cost = round(decision["reserved_dollars"] * rng.uniform(0.3, 1.0), 6)
                tokens = (decision["max_input_tokens"], decision["max_output_tokens"] // 2)
                report = {
                    "decision_id": decision["decision_id"],
                    "success": True,
                    "quality": 0.9,
                    "input_tokens": tokens[0],
                    "output_tokens": tokens[1],
                    "cost_dollars": cost,
                }
                accepted = post(client, worker + i + 1, "/v1/outcomes", report)
                if accepted is not None:
                    assert accepted.status_code == 202, accepted.text
                    with burst.lock:
                        burst.booked[decision["decision_id"]] = (cost, *tokens)

    threads = [threading.Thread(target=agent, args=(w,)) for w in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def check_books(uri: str, burst: Burst) -> None:
    """The store's books are the sum of its settlements, each decision once, within the caps."""
    store = PostgresLedgerStore(uri, clock=lambda: time.time() + 10**6)  # past every expiry
    try:
        store.expire()  # what no outcome reached (a killed replica's in-flight ones) expires
        view = store.view("shared")
        settled = {
            d: (expired, cost, i, o) for d, expired, cost, i, o in store.settlements("shared")
        }
    finally:
        store.close()
    store_ids = set(settled)
    assert len(settled) == view.steps, "one settlement per reservation, nothing double-booked"
    assert view.reserved_dollars == 0, "every reservation settled or expired"
    for decision_id, (cost, tokens_in, tokens_out) in burst.booked.items():
        assert settled[decision_id] == (False, cost, tokens_in, tokens_out), "booked as reported"
    assert set(burst.reserved) <= store_ids
    unknown = store_ids - set(burst.reserved)
    assert all(settled[d][0] for d in unknown), "only reservations nobody heard of expired"
    spent = sum(cost for _, cost, _, _ in settled.values())
    assert round(view.spent_dollars, 6) == round(spent, 6)
    assert view.spent_dollars <= CAP + 1e-9
    assert view.input_tokens_used == sum(i for *_, i, _ in settled.values()) <= 200_000
    assert view.output_tokens_used == sum(o for *_, o in settled.values()) <= 50_000


def test_two_replicas_share_one_ledger_to_the_cent(postgres_uri: str, replicas: list) -> None:
    urls = [url for url, _ in replicas]
    open_task(urls[0])
    burst = Burst()
    run_burst(urls, burst, alive=[True, True])
    assert burst.decisions == WORKERS * PER_WORKER
    assert burst.refused > 0, "the load should exhaust the ordinary budget"
    assert set(burst.booked) == set(burst.reserved)
    views = [httpx.get(f"{u}/v1/tasks/shared", headers=ADMIN_HEADERS).json() for u in urls]
    assert views[0]["ledger"] == views[1]["ledger"]
    assert round(views[0]["ledger"]["spent_dollars"], 6) == round(
        sum(cost for cost, _, _ in burst.booked.values()), 6
    )
    some = next(iter(burst.booked))
    again = {"decision_id": some, "success": True, "quality": 1, "input_tokens": 1,
             "output_tokens": 1, "cost_dollars": 0.01}  # fmt: skip
    for url in urls:
        assert (
            httpx.post(f"{url}/v1/outcomes", json=again, headers=ADMIN_HEADERS).status_code == 409
        )
    check_books(postgres_uri, burst)


def test_a_replica_killed_mid_burst_loses_nothing_booked(postgres_uri: str, replicas: list) -> None:
    urls = [url for url, _ in replicas]
    victim = replicas[0][1]
    open_task(urls[1])
    burst = Burst()
    run_burst(
        urls, burst, [True, True], kill_at=150, kill=lambda: victim.send_signal(signal.SIGKILL)
    )
    assert victim.wait(timeout=30) == -signal.SIGKILL
    wait_refused(urls[0])
    assert len(burst.booked) > 0 and burst.decisions == WORKERS * PER_WORKER
    check_books(postgres_uri, burst)
    ledger = httpx.get(f"{urls[1]}/v1/tasks/shared", headers=ADMIN_HEADERS).json()["ledger"]
    assert ledger["reserved_dollars"] == 0 and ledger["spent_dollars"] <= CAP + 1e-9
