"""What a PostgreSQL router knows of the books: drafts and settlements on the books it last saw
stored, each checked by the statement that commits it, across replicas."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest

from router_service.errors import Conflict, NotFound
from router_service.ledger import BudgetExceeded
from router_service.ledger_postgres import PostgresDraft, PostgresLedgerStore
from tests.router_service.test_ledger import (
    BUDGET,
    FakeClock,
    ref,
    reservation,
    reserve,
    task,
)


@pytest.fixture
def replicas(postgres_uri: str) -> Iterator[list[PostgresLedgerStore]]:
    """Two stores on one database, as two router replicas see it."""
    clock = FakeClock()
    opened = [PostgresLedgerStore(postgres_uri, clock) for _ in range(2)]
    try:
        yield opened
    finally:
        for store in opened:
            store.close()


def known(store: PostgresLedgerStore, task_id: str = "t") -> PostgresDraft:
    draft = store.known_draft(task_id)
    assert draft is not None, "the store should know the task's books"
    return draft


def commit(draft: PostgresDraft, decision_id: str, dollars: float) -> bool:
    draft.reserve(reservation(decision_id, dollars, task_id=draft.task_id))
    draft.record(ref(decision_id, task_id=draft.task_id), b"answer", is_step=True)
    return draft.commit()


def test_a_router_drafts_on_the_books_of_its_last_commit(
    replicas: list[PostgresLedgerStore],
) -> None:
    first, second = replicas
    assert first.known_draft("t") is None, "nothing known of a task never seen"
    first.open_task(task())
    assert commit(known(first), "d1", 0.25)
    draft = known(first)
    assert (draft.books.reserved_dollars, draft.books.steps) == (0.25, 1)
    assert second.known_draft("t") is None
    assert commit(second.draft("t"), "d2", 0.25)  # type: ignore[arg-type]
    stale = known(first)
    assert not commit(stale, "d3", 0.25), "the other replica changed the books"
    fresh = known(first)
    assert (fresh.books.reserved_dollars, fresh.books.steps) == (0.5, 2), "as the commit saw them"
    assert commit(fresh, "d3", 0.15)
    view = second.view("t")
    assert (view.reserved_dollars, view.steps) == (pytest.approx(0.65), 3)
    assert [second.decision(d).decision_id for d in ("d1", "d2", "d3")] == ["d1", "d2", "d3"]


def test_a_known_draft_of_a_closed_task_is_refused(replicas: list[PostgresLedgerStore]) -> None:
    first, second = replicas
    first.open_task(task())
    second.close_task("t")
    assert not commit(known(first), "d1", 0.1)
    with pytest.raises(Conflict, match="closed"):
        first.known_draft("t")


def test_a_task_opened_again_under_a_purged_id_is_not_drafted_on_the_old_budget(
    replicas: list[PostgresLedgerStore],
) -> None:
    first, second = replicas
    first.open_task(task())
    second.close_task("t")
    assert second.purge_closed(closed_before=10**12) == ["t"]
    second.open_task(task(budget=BUDGET.model_copy(update={"total_dollars": 0.5})))
    old = known(first)
    assert old.books.budget.total_dollars == 1.0, "the first router still knows the old task"
    assert not commit(old, "d1", 0.25), "same books, another budget: the commit is refused"
    with pytest.raises(BudgetExceeded):
        known(first).reserve(reservation("d1", 0.25))


def test_a_settlement_on_changed_books_is_booked_once_on_the_books_as_they_are(
    replicas: list[PostgresLedgerStore],
) -> None:
    first, second = replicas
    first.open_task(task())
    assert commit(known(first), "d1", 0.25)
    reserve(second, reservation("d2", 0.125))  # the books first knows are stale now
    settlement = first.settle("d1", 0.0625, 5, 6)
    assert settlement.ledger is not None
    assert settlement.ledger.spent_dollars == 0.0625
    assert settlement.ledger.reserved_dollars == 0.125
    assert second.view("t") == settlement.ledger
    for store in replicas:
        with pytest.raises(Conflict, match="already has an outcome"):
            store.settle("d1", 0.0625, 5, 6)
    second.settle("d2", 0.125, 1, 1)  # read, then settled on the books as read
    assert first.view("t").spent_dollars == pytest.approx(0.1875)
    assert first.booked("d1") == (False, 0.0625, 5, 6)
    with pytest.raises(NotFound):
        first.settle("never", 0.1, 1, 1)


def test_replicas_settling_the_same_decision_together_book_it_once(
    replicas: list[PostgresLedgerStore],
) -> None:
    first, second = replicas
    first.open_task(task())
    for n in range(20):
        assert commit(known(first), f"d{n}", 0.01)
    for n in range(20):
        second._known.drop("t")  # second reads; first settles on what it knows
        results: list[str] = []
        threads = [
            threading.Thread(target=_settle, args=(store, f"d{n}", results)) for store in replicas
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == ["booked", "refused"]
    view = second.view("t")
    assert (view.spent_dollars, view.reserved_dollars) == (pytest.approx(0.1), 0)
    assert len(second.settlements("t")) == 20


def _settle(store: PostgresLedgerStore, decision_id: str, results: list[str]) -> None:
    try:
        store.settle(decision_id, 0.005, 1, 1)
        results.append("booked")
    except Conflict:
        results.append("refused")


def test_drafts_and_settlements_on_two_replicas_balance_to_the_cent(
    replicas: list[PostgresLedgerStore],
) -> None:
    """Threads on both replicas decide on known books and settle; the caps hold, once each."""
    replicas[0].open_task(task(budget=BUDGET.model_copy(update={"max_output_tokens": 10**9})))
    booked: list[float] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        store = replicas[seed % 2]
        for i in range(40):
            decision_id, amount = f"{seed}-{i}", round(rng.uniform(0.001, 0.02), 6)
            draft = store.known_draft("t") or store.draft("t")
            assert draft is not None
            try:
                draft.reserve(reservation(decision_id, amount, tokens=1))
            except BudgetExceeded:
                continue
            if not draft.commit():
                continue
            cost = round(amount * rng.uniform(0.2, 1.0), 6)
            store.settle(decision_id, cost, 1, 1)
            booked.append(cost)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    view = replicas[1].view("t")
    assert round(view.spent_dollars, 6) == round(sum(booked), 6) <= 0.7
    assert (view.reserved_dollars, view.steps) == (0, len(booked))
    assert len(replicas[0].settlements("t")) == len(booked) > 0
