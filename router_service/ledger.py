"""Per-task budget ledgers: reservations that are checked and committed atomically.

A decision reserves the worst case of its step (input tokens plus the granted output tokens at
the model's prices); an outcome settles the reservation and books the actual cost. Ordinary
steps draw only on the budget outside the two reserves; a ``final_synthesis`` step may also use
the synthesis reserve and a ``handoff`` step the hand-off reserve. Because the check and the
commit happen under one lock, no interleaving of requests can commit beyond the caps.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from router_service.errors import Conflict, NotFound
from router_service.schemas import Budget, LedgerView

Clock = Callable[[], float]
EPSILON_DOLLARS = 1e-12


@dataclass(frozen=True)
class Headroom:
    """What a step of a given kind may still commit: dollars and tokens."""

    dollars: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Reservation:
    decision_id: str
    task_id: str
    model: str
    step_kind: str
    dollars: float
    input_tokens: int
    output_tokens: int
    is_retry: bool
    expires_at: float


@dataclass(frozen=True)
class Settlement:
    """An outcome booked against its reservation."""

    reservation: Reservation
    cost_dollars: float
    input_tokens: int
    output_tokens: int
    exceeded_reservation: bool
    expired: bool = False


@dataclass
class TaskBooks:
    budget: Budget
    spent_dollars: float = 0.0
    input_tokens_used: int = 0
    output_tokens_used: int = 0
    retries_used: int = 0
    steps: int = 0
    closed: bool = False
    open_reservations: dict[str, Reservation] = field(default_factory=dict)
    committed_by_kind: dict[str, float] = field(default_factory=dict)
    reserved_dollars: float = 0.0
    reserved_input_tokens: int = 0
    reserved_output_tokens: int = 0
    next_expiry: float = math.inf

    def hold(self, reservation: Reservation) -> None:
        """Open a reservation, keeping the running totals the caps are checked against."""
        self.open_reservations[reservation.decision_id] = reservation
        self.reserved_dollars += reservation.dollars
        self.reserved_input_tokens += reservation.input_tokens
        self.reserved_output_tokens += reservation.output_tokens
        self.next_expiry = min(self.next_expiry, reservation.expires_at)

    def release(self, decision_id: str) -> Reservation | None:
        reservation = self.open_reservations.pop(decision_id, None)
        if reservation is not None:
            self.reserved_input_tokens -= reservation.input_tokens
            self.reserved_output_tokens -= reservation.output_tokens
            if self.open_reservations:
                self.reserved_dollars -= reservation.dollars
            else:
                self.reserved_dollars = 0.0  # no float residue once nothing is held
        return reservation

    def committed_dollars(self) -> float:
        return self.spent_dollars + self.reserved_dollars

    def headroom(self, step_kind: str) -> Headroom:
        budget = self.budget
        protected = 0.0
        for kind, reserve in (
            ("final_synthesis", budget.reserve_for_final_synthesis),
            ("handoff", budget.reserve_for_human_handoff),
        ):
            if kind != step_kind:
                protected += max(0.0, reserve - self.committed_by_kind.get(kind, 0.0))
        reserved_in = self.reserved_input_tokens
        reserved_out = self.reserved_output_tokens
        return Headroom(
            dollars=max(0.0, budget.total_dollars - protected - self.committed_dollars()),
            input_tokens=max(0, budget.max_input_tokens - self.input_tokens_used - reserved_in),
            output_tokens=max(0, budget.max_output_tokens - self.output_tokens_used - reserved_out),
        )

    def commit(self, step_kind: str, dollars: float) -> None:
        """Track what each step kind has committed, so a used reserve stops being protected."""
        self.committed_by_kind[step_kind] = self.committed_by_kind.get(step_kind, 0.0) + dollars

    def view(self) -> LedgerView:
        return LedgerView.model_construct(  # plain numbers: nothing to validate
            spent_dollars=self.spent_dollars,
            reserved_dollars=self.reserved_dollars,
            remaining_dollars=max(0.0, self.budget.total_dollars - self.committed_dollars()),
            input_tokens_used=self.input_tokens_used,
            output_tokens_used=self.output_tokens_used,
            retries_used=self.retries_used,
            steps=self.steps,
        )


class BudgetExceeded(Conflict):
    code = "budget_exceeded"


class Ledger(Protocol):
    """The budget truth of every task; several router replicas may share one implementation."""

    def open(self, task_id: str, budget: Budget) -> None: ...
    def transaction(self, task_id: str) -> LedgerTransaction: ...
    def settle(
        self, decision_id: str, cost_dollars: float, input_tokens: int, output_tokens: int
    ) -> Settlement: ...
    def close(self, task_id: str) -> LedgerView: ...
    def view(self, task_id: str) -> LedgerView: ...
    def expire(self) -> list[Settlement]: ...
    def forget(self, task_id: str) -> None: ...


class LedgerTransaction(Protocol):
    """Holds the task's books locked: read headroom, then reserve, with nothing in between."""

    books: TaskBooks

    def reserve(self, reservation: Reservation) -> None: ...
    def __enter__(self) -> LedgerTransaction: ...
    def __exit__(self, *exc: object) -> None: ...


class _Transaction:
    def __init__(self, ledger: InMemoryLedger, books: TaskBooks, lock: threading.Lock) -> None:
        self._ledger = ledger
        self.books = books
        self._lock = lock

    def __enter__(self) -> _Transaction:
        self._lock.acquire()
        self._ledger._expire_books(self.books)
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def reserve(self, reservation: Reservation) -> None:
        """Commit a reservation; raises if it would break a cap (the caller checked first)."""
        books = self.books
        if books.closed:
            raise Conflict(f"task {reservation.task_id!r} is closed", field="task_id")
        room = books.headroom(reservation.step_kind)
        if (
            reservation.dollars > room.dollars + EPSILON_DOLLARS
            or reservation.input_tokens > room.input_tokens
            or reservation.output_tokens > room.output_tokens
        ):
            raise BudgetExceeded(
                f"reservation of ${reservation.dollars:.6f} does not fit the task's budget",
                field="budget",
            )
        books.hold(reservation)
        books.commit(reservation.step_kind, reservation.dollars)
        books.steps += 1
        books.retries_used += int(reservation.is_retry)
        self._ledger._owner[reservation.decision_id] = reservation.task_id


class InMemoryLedger:
    """Ledger of one router process: a lock per task, reservations expiring on a clock."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._books: dict[str, TaskBooks] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._owner: dict[str, str] = {}
        self._registry_lock = threading.Lock()

    def now(self) -> float:
        return self._clock()

    def open(self, task_id: str, budget: Budget) -> None:
        with self._registry_lock:
            if task_id in self._books:
                raise Conflict(f"task {task_id!r} already has a ledger", field="task_id")
            self._books[task_id] = TaskBooks(budget)
            self._locks[task_id] = threading.Lock()

    def _get(self, task_id: str) -> tuple[TaskBooks, threading.Lock]:
        try:
            return self._books[task_id], self._locks[task_id]
        except KeyError:
            raise NotFound(f"unknown task {task_id!r}", field="task_id", value=task_id) from None

    def transaction(self, task_id: str) -> _Transaction:
        books, lock = self._get(task_id)
        return _Transaction(self, books, lock)

    def settle(
        self, decision_id: str, cost_dollars: float, input_tokens: int, output_tokens: int
    ) -> Settlement:
        """Release a reservation and book what the step really cost."""
        task_id = self._owner.get(decision_id)
        if task_id is None:
            raise NotFound(
                f"unknown decision {decision_id!r}", field="decision_id", value=decision_id
            )
        books, lock = self._get(task_id)
        with lock:
            reservation = books.release(decision_id)
            if reservation is None:
                raise Conflict(
                    f"decision {decision_id!r} already has an outcome (or expired)",
                    field="decision_id",
                    value=decision_id,
                )
            return self._book(books, reservation, cost_dollars, input_tokens, output_tokens)

    def _book(
        self,
        books: TaskBooks,
        reservation: Reservation,
        cost_dollars: float,
        input_tokens: int,
        output_tokens: int,
        expired: bool = False,
    ) -> Settlement:
        books.spent_dollars += cost_dollars
        books.commit(reservation.step_kind, cost_dollars - reservation.dollars)
        books.input_tokens_used += input_tokens
        books.output_tokens_used += output_tokens
        return Settlement(
            reservation,
            cost_dollars,
            input_tokens,
            output_tokens,
            exceeded_reservation=cost_dollars > reservation.dollars + EPSILON_DOLLARS
            or output_tokens > reservation.output_tokens,
            expired=expired,
        )

    def _expire_books(self, books: TaskBooks) -> list[Settlement]:
        now = self._clock()
        if now < books.next_expiry:
            return []
        stale = [r for r in books.open_reservations.values() if r.expires_at <= now]
        live = (r.expires_at for r in books.open_reservations.values() if r.expires_at > now)
        books.next_expiry = min(live, default=math.inf)
        settled = []
        for reservation in stale:
            books.release(reservation.decision_id)
            settled.append(
                self._book(
                    books,
                    reservation,
                    reservation.dollars,
                    reservation.input_tokens,
                    reservation.output_tokens,
                    expired=True,
                )
            )
        return settled

    def expire(self) -> list[Settlement]:
        """Book every overdue reservation at its estimate (a crashed agent cannot leak budget)."""
        settled: list[Settlement] = []
        for task_id in list(self._books):
            books, lock = self._get(task_id)
            with lock:
                settled.extend(self._expire_books(books))
        return settled

    def close(self, task_id: str) -> LedgerView:
        books, lock = self._get(task_id)
        with lock:
            if books.closed:
                raise Conflict(f"task {task_id!r} is already closed", field="task_id")
            books.closed = True
            return books.view()

    def forget(self, task_id: str) -> None:
        """Drop a closed task's books (after the retention period)."""
        with self._registry_lock:
            self._books.pop(task_id, None)
            self._locks.pop(task_id, None)

    def view(self, task_id: str) -> LedgerView:
        books, lock = self._get(task_id)
        with lock:
            self._expire_books(books)
            return books.view()
