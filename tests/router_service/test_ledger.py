"""Ledger invariants: caps, reserves, settlement, expiry, concurrency."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_service.errors import Conflict, NotFound
from router_service.ledger import BudgetExceeded, InMemoryLedger, Reservation
from router_service.schemas import Budget

BUDGET = Budget(
    total_dollars=1.0,
    max_input_tokens=100_000,
    max_output_tokens=10_000,
    reserve_for_final_synthesis=0.2,
    reserve_for_human_handoff=0.1,
    hard_stop_after_retries=2,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reservation(
    decision_id: str, dollars: float, kind: str = "execution", tokens: int = 10, ttl: float = 60
) -> Reservation:
    return Reservation(decision_id, "t", "m", kind, dollars, tokens, tokens, False, ttl)


def reserve(ledger: InMemoryLedger, r: Reservation) -> None:
    with ledger.transaction("t") as txn:
        txn.reserve(r)


def test_headroom_keeps_each_reserve_for_its_own_step() -> None:
    ledger = InMemoryLedger(FakeClock())
    ledger.open("t", BUDGET)
    with ledger.transaction("t") as txn:
        assert txn.books.headroom("execution").dollars == pytest.approx(0.7)
        assert txn.books.headroom("final_synthesis").dollars == pytest.approx(0.9)
        assert txn.books.headroom("handoff").dollars == pytest.approx(0.8)


def test_reservation_beyond_the_cap_is_refused_and_changes_nothing() -> None:
    ledger = InMemoryLedger(FakeClock())
    ledger.open("t", BUDGET)
    reserve(ledger, reservation("d1", 0.6))
    with pytest.raises(BudgetExceeded):
        reserve(ledger, reservation("d2", 0.2))
    view = ledger.view("t")
    assert view.reserved_dollars == pytest.approx(0.6) and view.steps == 1
    reserve(ledger, reservation("d3", 0.25, kind="final_synthesis"))
    assert ledger.view("t").remaining_dollars == pytest.approx(0.15)


def test_settlement_books_actual_cost_once() -> None:
    ledger = InMemoryLedger(FakeClock())
    ledger.open("t", BUDGET)
    reserve(ledger, reservation("d1", 0.3, tokens=100))
    settled = ledger.settle("d1", 0.12, 80, 40)
    assert not settled.exceeded_reservation
    view = ledger.view("t")
    assert (view.spent_dollars, view.reserved_dollars) == (pytest.approx(0.12), 0)
    assert (view.input_tokens_used, view.output_tokens_used) == (80, 40)
    with pytest.raises(Conflict, match="already has an outcome"):
        ledger.settle("d1", 0.12, 80, 40)
    with pytest.raises(NotFound, match="unknown decision"):
        ledger.settle("nope", 0.1, 1, 1)
    assert ledger.view("t").spent_dollars == pytest.approx(0.12)


def test_overrun_is_booked_as_reported_and_flagged() -> None:
    ledger = InMemoryLedger(FakeClock())
    ledger.open("t", BUDGET)
    reserve(ledger, reservation("d1", 0.1, tokens=100))
    settled = ledger.settle("d1", 0.15, 100, 150)
    assert settled.exceeded_reservation
    assert ledger.view("t").spent_dollars == pytest.approx(0.15)


def test_unsettled_reservations_expire_at_their_estimate() -> None:
    clock = FakeClock()
    ledger = InMemoryLedger(clock)
    ledger.open("t", BUDGET)
    reserve(ledger, reservation("d1", 0.25, ttl=30))
    clock.now = 29
    assert ledger.expire() == []
    clock.now = 31
    expired = ledger.expire()
    assert [s.reservation.decision_id for s in expired] == ["d1"] and expired[0].expired
    view = ledger.view("t")
    assert view.spent_dollars == pytest.approx(0.25) and view.reserved_dollars == 0
    with pytest.raises(Conflict):
        ledger.settle("d1", 0.1, 1, 1)


def test_closed_ledger_refuses_reservations() -> None:
    ledger = InMemoryLedger(FakeClock())
    ledger.open("t", BUDGET)
    ledger.close("t")
    with pytest.raises(Conflict, match="closed"):
        reserve(ledger, reservation("d1", 0.1))


def test_concurrent_reservations_and_settlements_balance_to_the_cent() -> None:
    ledger = InMemoryLedger(FakeClock())
    ledger.open("t", BUDGET.model_copy(update={"max_output_tokens": 10**9}))
    booked: list[float] = []
    refused: list[str] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(100):
            decision_id = f"{seed}-{i}"
            amount = round(rng.uniform(0.001, 0.02), 6)
            try:
                reserve(ledger, reservation(decision_id, amount, tokens=1))
            except BudgetExceeded:
                with lock:
                    refused.append(decision_id)
                continue
            cost = round(amount * rng.uniform(0.2, 1.0), 6)
            ledger.settle(decision_id, cost, 1, 1)
            with lock:
                booked.append(cost)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    view = ledger.view("t")
    assert round(view.spent_dollars, 6) == round(sum(booked), 6)
    assert view.spent_dollars <= 0.7 + 1e-9
    assert view.reserved_dollars == 0
    assert view.steps == len(booked) == 800 - len(refused)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["execution", "control", "final_synthesis", "handoff", "settle", "tick"]),
        st.floats(0.0, 0.5),
        st.floats(0.0, 1.0),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(OPS)
def test_no_sequence_of_requests_breaks_the_caps_or_the_reserves(ops: list) -> None:
    """Agents that follow their grants (actual <= reserved) can never overspend."""
    clock = FakeClock()
    ledger = InMemoryLedger(clock)
    ledger.open("t", BUDGET)
    open_ids: list[str] = []
    reserved: dict[str, float] = {}
    ordinary = 0.0
    for n, (op, amount, fraction) in enumerate(ops):
        if op == "tick":
            clock.now += amount * 200
            ledger.expire()
        elif op == "settle":
            if open_ids:
                decision_id = open_ids.pop(int(fraction * len(open_ids)) % len(open_ids))
                try:
                    settled = ledger.settle(decision_id, reserved[decision_id] * fraction, 1, 1)
                except Conflict:
                    continue
                if settled.reservation.step_kind not in ("final_synthesis", "handoff"):
                    ordinary += settled.cost_dollars - settled.reservation.dollars
        else:
            try:
                reserve(ledger, reservation(f"d{n}", amount, kind=op, tokens=1, ttl=clock.now + 60))
            except BudgetExceeded:
                continue
            open_ids.append(f"d{n}")
            reserved[f"d{n}"] = amount
            if op not in ("final_synthesis", "handoff"):
                ordinary += amount
        view = ledger.view("t")
        assert view.spent_dollars >= 0 and view.reserved_dollars >= -1e-12
        assert view.spent_dollars + view.reserved_dollars <= BUDGET.total_dollars + 1e-9
        assert ordinary <= 0.7 + 1e-9, "ordinary steps ate into the reserves"
