"""One contract for every ledger store (memory, SQLite, PostgreSQL): caps, reserves,
settlement, expiry, closing, history and concurrency."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router_service.errors import Conflict, NotFound
from router_service.ledger import BudgetExceeded, DecisionRef, LedgerStore, Reservation
from router_service.ledger_memory import InMemoryLedger, unknown_task
from router_service.ledger_postgres import PostgresLedgerStore
from router_service.ledger_sqlite import SqliteLedgerStore
from router_service.schemas import Budget, Task

BUDGET = Budget(
    total_dollars=1.0,
    max_input_tokens=100_000,
    max_output_tokens=10_000,
    reserve_for_final_synthesis=0.2,
    reserve_for_human_handoff=0.1,
    hard_stop_after_retries=2,
)
STORES = ["memory", "sqlite", "postgres"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def make_store(kind: str, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest):
    if kind == "memory":
        return InMemoryLedger(clock)
    if kind == "sqlite":
        return SqliteLedgerStore(tmp_path / "ledger.sqlite3", clock)
    return PostgresLedgerStore(request.getfixturevalue("postgres_uri"), clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=STORES)
def store(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> Iterator[LedgerStore]:
    opened = make_store(request.param, clock, tmp_path, request)
    try:
        yield opened
    finally:
        opened.close()


def task(task_id: str = "t", budget: Budget = BUDGET) -> Task:
    return Task(
        task_id=task_id,
        tenant="acme",
        trust_domain="eng",
        task_type="research",
        budget=budget,
        planned_steps=4,
        tags={"team": "a"},
        status="open",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def reservation(
    decision_id: str,
    dollars: float,
    kind: str = "execution",
    tokens: int = 10,
    expires_at: float = 2_000.0,
    task_id: str = "t",
) -> Reservation:
    return Reservation(decision_id, task_id, "m", kind, dollars, tokens, tokens, False, expires_at)


def reserve(store: LedgerStore, r: Reservation) -> None:
    with store.transaction(r.task_id) as txn:
        txn.reserve(r)


def record(store: LedgerStore, r: DecisionRef, packed: bytes, is_step: bool) -> None:
    with store.transaction(r.task_id) as txn:
        txn.record(r, packed, is_step)


def ref(decision_id: str, task_id: str = "t", model: str | None = "m") -> DecisionRef:
    return DecisionRef(decision_id, task_id, model, "proceed", "execution", "x", 100, 0.1)


def test_headroom_keeps_each_reserve_for_its_own_step(store: LedgerStore) -> None:
    store.open_task(task())
    with store.transaction("t") as txn:
        assert txn.books.headroom("execution").dollars == pytest.approx(0.7)
        assert txn.books.headroom("final_synthesis").dollars == pytest.approx(0.9)
        assert txn.books.headroom("handoff").dollars == pytest.approx(0.8)


def test_reservation_beyond_the_cap_is_refused_and_changes_nothing(store: LedgerStore) -> None:
    store.open_task(task())
    reserve(store, reservation("d1", 0.6))
    with pytest.raises(BudgetExceeded):
        reserve(store, reservation("d2", 0.2))
    view = store.view("t")
    assert view.reserved_dollars == pytest.approx(0.6) and view.steps == 1
    reserve(store, reservation("d3", 0.25, kind="final_synthesis"))
    assert store.view("t").remaining_dollars == pytest.approx(0.15)


def test_a_failed_decision_commits_nothing(store: LedgerStore) -> None:
    store.open_task(task())
    with pytest.raises(RuntimeError), store.transaction("t") as txn:
        txn.reserve(reservation("d1", 0.3))
        txn.record(ref("d1"), b"answer", is_step=True)
        raise RuntimeError("the decision failed after reserving")
    view = store.view("t")
    assert (view.reserved_dollars, view.steps) == (0, 0)
    assert store.packed_decisions("t") == []
    with pytest.raises(NotFound):
        store.settle("d1", 0.1, 1, 1)


def test_settlement_books_actual_cost_once(store: LedgerStore) -> None:
    store.open_task(task())
    reserve(store, reservation("d1", 0.3, tokens=100))
    settled = store.settle("d1", 0.12, 80, 40)
    assert not settled.exceeded_reservation and not settled.expired
    view = store.view("t")
    assert (view.spent_dollars, view.reserved_dollars) == (pytest.approx(0.12), 0)
    assert (view.input_tokens_used, view.output_tokens_used) == (80, 40)
    with pytest.raises(Conflict, match="already has an outcome"):
        store.settle("d1", 0.12, 80, 40)
    with pytest.raises(NotFound, match="unknown decision"):
        store.settle("nope", 0.1, 1, 1)
    assert store.view("t").spent_dollars == pytest.approx(0.12)


def test_overrun_is_booked_as_reported_and_flagged(store: LedgerStore) -> None:
    store.open_task(task())
    reserve(store, reservation("d1", 0.1, tokens=100))
    settled = store.settle("d1", 0.15, 100, 150)
    assert settled.exceeded_reservation
    assert store.view("t").spent_dollars == pytest.approx(0.15)


def test_unsettled_reservations_expire_once_at_their_estimate(
    store: LedgerStore, clock: FakeClock
) -> None:
    store.open_task(task())
    reserve(store, reservation("d1", 0.25, expires_at=1_030))
    reserve(store, reservation("d2", 0.05, expires_at=1_090))
    clock.now = 1_029
    assert store.expire() == []
    clock.now = 1_031
    expired = store.expire()
    assert [s.reservation.decision_id for s in expired] == ["d1"] and expired[0].expired
    assert store.expire() == []
    view = store.view("t")
    assert view.spent_dollars == pytest.approx(0.25)
    assert view.reserved_dollars == pytest.approx(0.05)
    with pytest.raises(Conflict):
        store.settle("d1", 0.1, 1, 1)
    store.settle("d2", 0.01, 1, 1)
    assert store.view("t").spent_dollars == pytest.approx(0.26)


def test_a_transaction_expires_what_is_overdue_before_reading_headroom(
    store: LedgerStore, clock: FakeClock
) -> None:
    store.open_task(task())
    reserve(store, reservation("d1", 0.6, expires_at=1_010))
    clock.now = 1_011
    with store.transaction("t") as txn:
        assert txn.books.reserved_dollars == 0 and txn.books.spent_dollars == pytest.approx(0.6)
    assert store.view("t").spent_dollars == pytest.approx(0.6)


def test_closed_task_refuses_decisions_but_settles_in_flight_outcomes(store: LedgerStore) -> None:
    store.open_task(task())
    reserve(store, reservation("d1", 0.1))
    assert store.close_task("t").reserved_dollars == pytest.approx(0.1)
    assert store.task("t").status == "closed"
    with pytest.raises(Conflict, match="closed"):
        reserve(store, reservation("d2", 0.1))
    with pytest.raises(Conflict, match="already closed"):
        store.close_task("t")
    store.settle("d1", 0.05, 1, 1)
    assert store.view("t").spent_dollars == pytest.approx(0.05)


def test_tasks_and_decisions_round_trip(store: LedgerStore) -> None:
    store.open_task(task())
    assert store.task("t") == task()
    with pytest.raises(Conflict, match="already exists"):
        store.open_task(task())
    with pytest.raises(NotFound, match="unknown task"):
        store.task("nope")
    with pytest.raises(NotFound, match="unknown task"):
        store.view("nope")
    record(store, ref("d1"), b"first", is_step=True)
    record(store, ref("d2", model=None), b"second", is_step=False)
    record(store, ref("d3"), b"third", is_step=True)
    assert store.decision("d2") == ref("d2", model=None)
    assert store.packed_decisions("t") == [b"first", b"second", b"third"]
    assert store.step_decision_ids("t") == ["d1", "d3"]
    with pytest.raises(NotFound, match="unknown decision"):
        store.decision("d9")


def test_purge_drops_closed_tasks_with_nothing_open_and_their_history(
    store: LedgerStore, clock: FakeClock
) -> None:
    for task_id in ("done", "in-flight", "open"):
        store.open_task(task(task_id))
        with store.transaction(task_id) as txn:
            txn.reserve(reservation(f"{task_id}-d", 0.1, task_id=task_id))
            txn.record(ref(f"{task_id}-d", task_id), b"x", is_step=True)
    store.settle("done-d", 0.1, 1, 1)
    store.close_task("done")
    store.close_task("in-flight")
    assert store.purge_closed(clock.now) == []
    clock.now += 10
    assert store.purge_closed(clock.now - 20) == []
    assert store.purge_closed(clock.now) == ["done"]
    with pytest.raises(NotFound):
        store.task("done")
    with pytest.raises(NotFound):
        store.decision("done-d")
    assert store.task("in-flight").status == "closed" and store.task("open").status == "open"


def _hammer(stores: list[LedgerStore], workers: int, per_worker: int) -> tuple[list, list]:
    """Threads reserving and settling random amounts, spread over ``stores``."""
    booked: list[float] = []
    refused: list[str] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        store = stores[seed % len(stores)]
        for i in range(per_worker):
            decision_id = f"{seed}-{i}"
            amount = round(rng.uniform(0.001, 0.02), 6)
            try:
                reserve(store, reservation(decision_id, amount, tokens=1))
            except BudgetExceeded:
                with lock:
                    refused.append(decision_id)
                continue
            cost = round(amount * rng.uniform(0.2, 1.0), 6)
            store.settle(decision_id, cost, 1, 1)
            with lock:
                booked.append(cost)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return booked, refused


def test_concurrent_reservations_and_settlements_balance_to_the_cent(store: LedgerStore) -> None:
    store.open_task(task(budget=BUDGET.model_copy(update={"max_output_tokens": 10**9})))
    booked, refused = _hammer([store], workers=8, per_worker=60)
    view = store.view("t")
    assert round(view.spent_dollars, 6) == round(sum(booked), 6)
    assert view.spent_dollars <= 0.7 + 1e-9
    assert view.reserved_dollars == 0
    assert view.steps == len(booked) == 480 - len(refused)
    assert refused, "the load should exhaust the ordinary budget"


def test_two_postgres_stores_share_one_truth(postgres_uri: str, clock: FakeClock) -> None:
    """Two stores on one database behave as two router replicas: one set of books."""
    replicas = [PostgresLedgerStore(postgres_uri, clock) for _ in range(2)]
    try:
        replicas[0].open_task(task(budget=BUDGET.model_copy(update={"max_output_tokens": 10**9})))
        booked, refused = _hammer(replicas, workers=8, per_worker=60)
        views = [r.view("t") for r in replicas]
        assert views[0] == views[1]
        assert round(views[0].spent_dollars, 6) == round(sum(booked), 6) <= 0.7
        assert views[0].reserved_dollars == 0 and refused
        settled = replicas[1].settlements("t")
        assert len(settled) == len({d for d, *_ in settled}) == len(booked)
    finally:
        for replica in replicas:
            replica.close()


def test_sqlite_books_survive_reopening(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "ledger.sqlite3"
    first = SqliteLedgerStore(path, clock)
    first.open_task(task())
    reserve(first, reservation("d1", 0.3))
    reserve(first, reservation("d2", 0.1))
    first.settle("d1", 0.2, 5, 5)
    before = first.view("t")
    first.close()
    again = SqliteLedgerStore(path, clock)
    try:
        assert again.view("t") == before
        assert again.settle("d2", 0.05, 1, 1).reservation == reservation("d2", 0.1)
        with pytest.raises(Conflict):
            again.settle("d1", 0.2, 5, 5)
    finally:
        again.close()


def test_a_second_process_cannot_open_the_same_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first = SqliteLedgerStore(path)
    try:
        with pytest.raises(Exception, match=r"BUDGET_ROUTER_LEDGER_URI: .* in use"):
            SqliteLedgerStore(path)
    finally:
        first.close()


OPS = st.lists(
    st.tuples(
        st.sampled_from(["execution", "control", "final_synthesis", "handoff", "settle", "tick"]),
        st.floats(0.0, 0.5),
        st.floats(0.0, 1.0),
    ),
    max_size=40,
)
EXAMPLES = itertools.count()


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
def test_no_sequence_of_requests_breaks_the_caps_or_the_reserves(
    store: LedgerStore, clock: FakeClock, ops: list
) -> None:
    """Agents that follow their grants (actual <= reserved) can never overspend."""
    task_id = f"h{next(EXAMPLES)}"
    store.open_task(task(task_id))
    open_ids: list[str] = []
    reserved: dict[str, float] = {}
    ordinary = 0.0
    for n, (op, amount, fraction) in enumerate(ops):
        if op == "tick":
            clock.now += amount * 200
            store.expire()
        elif op == "settle":
            if open_ids:
                decision_id = open_ids.pop(int(fraction * len(open_ids)) % len(open_ids))
                try:
                    settled = store.settle(decision_id, reserved[decision_id] * fraction, 1, 1)
                except Conflict:
                    continue
                if settled.reservation.step_kind not in ("final_synthesis", "handoff"):
                    ordinary += settled.cost_dollars - settled.reservation.dollars
        else:
            decision_id = f"{task_id}-{n}"
            try:
                reserve(
                    store,
                    reservation(decision_id, amount, op, 1, clock.now + 60, task_id=task_id),
                )
            except BudgetExceeded:
                continue
            open_ids.append(decision_id)
            reserved[decision_id] = amount
            if op not in ("final_synthesis", "handoff"):
                ordinary += amount
        view = store.view(task_id)
        assert view.spent_dollars >= 0 and view.reserved_dollars >= -1e-12
        assert view.spent_dollars + view.reserved_dollars <= BUDGET.total_dollars + 1e-9
        assert ordinary <= 0.7 + 1e-9, "ordinary steps ate into the reserves"


def test_expiry_skips_a_task_purged_between_finding_and_locking_it(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteLedgerStore(tmp_path / "ledger.sqlite3", clock)
    try:
        for task_id in ("gone", "kept"):
            store.open_task(task(task_id))
            reserve(store, reservation(f"d-{task_id}", 0.1, expires_at=1_010, task_id=task_id))
        lock_books = store._lock_books

        def purged_by_another_replica(conn: object, task_id: str) -> object:
            if task_id == "gone":
                raise unknown_task(task_id)
            return lock_books(conn, task_id)

        monkeypatch.setattr(store, "_lock_books", purged_by_another_replica)
        clock.now = 1_011
        assert [s.reservation.decision_id for s in store.expire()] == ["d-kept"]
    finally:
        store.close()


def test_booked_tells_what_stands_for_a_decision(store: LedgerStore, clock: FakeClock) -> None:
    store.open_task(task())
    reserve(store, reservation("d1", 0.25, expires_at=1_030))
    reserve(store, reservation("d2", 0.05, tokens=7, expires_at=1_090))
    assert store.booked("d1") is None
    store.settle("d1", 0.125, 3, 4)
    clock.now = 1_091
    store.expire()
    assert store.booked("d1") == (False, 0.125, 3, 4)
    assert store.booked("d2") == (True, 0.05, 7, 7)
    assert store.booked("never") is None


def test_a_postgres_draft_commits_only_books_that_did_not_change(
    postgres_uri: str, clock: FakeClock
) -> None:
    """Two replicas draft on the same books; the second commit loses and writes nothing."""
    replicas = [PostgresLedgerStore(postgres_uri, clock) for _ in range(2)]
    try:
        replicas[0].open_task(task())
        first, second = replicas[0].draft("t"), replicas[1].draft("t")
        assert first is not None and second is not None
        for draft, decision_id in ((first, "d1"), (second, "d2")):
            draft.reserve(reservation(decision_id, 0.6))
            draft.record(ref(decision_id), b"answer", is_step=True)
        assert first.commit()
        assert not second.commit(), "each drafted 0.6 of 0.7: both together would overspend"
        view = replicas[1].view("t")
        assert (view.reserved_dollars, view.steps) == (pytest.approx(0.6), 1)
        assert [r.decision_id for r in map(replicas[1].decision, ["d1"])] == ["d1"]
        with pytest.raises(NotFound):
            replicas[1].decision("d2")
        again = replicas[1].draft("t")
        assert again is not None and again.books.headroom("execution").dollars == pytest.approx(0.1)
    finally:
        for replica in replicas:
            replica.close()


def test_a_postgres_draft_leaves_expiry_and_closed_tasks_to_the_lock(
    postgres_uri: str, clock: FakeClock
) -> None:
    store = PostgresLedgerStore(postgres_uri, clock)
    try:
        store.open_task(task())
        reserve(store, reservation("d1", 0.1, expires_at=clock.now + 5))
        assert store.draft("t") is not None
        clock.now += 5
        assert store.draft("t") is None, "an overdue reservation is expired under the lock"
        store.close_task("t")
        with pytest.raises(Conflict, match="closed"):
            store.draft("t")
        with pytest.raises(NotFound):
            store.draft("nobody")
    finally:
        store.close()
