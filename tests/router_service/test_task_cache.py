"""A replica's cached task never outlives a purge: a re-opened task id is read afresh."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from router_service.ledger_sqlite import SqliteLedgerStore
from router_service.schemas import TaskCreate
from router_service.tasks import TaskStore

RETENTION_S = 300.0
BUDGET = {"total_dollars": 1.0, "max_input_tokens": 1000, "max_output_tokens": 1000}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def request(domain: str) -> TaskCreate:
    return TaskCreate(task_id="ticket-42", task_type="qa", trust_domain=domain, budget=BUDGET)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Iterator[SqliteLedgerStore]:
    opened = SqliteLedgerStore(":memory:", clock)
    yield opened
    opened.close()


def replicas(store: SqliteLedgerStore, clock: Clock) -> tuple[TaskStore, TaskStore]:
    return TaskStore(store, RETENTION_S / 2, clock), TaskStore(store, RETENTION_S / 2, clock)


def test_a_task_id_reopened_after_its_purge_is_not_served_from_another_replicas_cache(
    store: SqliteLedgerStore, clock: Clock
) -> None:
    replica_a, replica_b = replicas(store, clock)
    replica_a.open(request("default"), "acme")
    assert replica_b.get("ticket-42").task.tenant == "acme"  # cached by B while open
    store.close_task("ticket-42")
    replica_a.mark_closed("ticket-42")
    clock.now += RETENTION_S  # the retention passes before the purge
    assert store.purge_closed(clock.now) == ["ticket-42"]
    replica_a.open(request("restricted"), "globex")
    served = replica_b.get("ticket-42").task
    assert (served.tenant, served.trust_domain) == ("globex", "restricted")


def test_closed_tasks_are_read_from_the_store_not_cached(
    store: SqliteLedgerStore, clock: Clock
) -> None:
    replica_a, replica_b = replicas(store, clock)
    replica_a.open(request("default"), "acme")
    assert replica_b.get("ticket-42").task.status == "open"
    store.close_task("ticket-42")
    assert replica_b.fresh("ticket-42").task.status == "closed"
    store.purge_closed(clock.now + 1)
    replica_a.open(request("restricted"), "globex")
    assert replica_b.get("ticket-42").task.tenant == "globex"
