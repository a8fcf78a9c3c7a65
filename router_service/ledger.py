"""Per-task budget books and the store seam that keeps them: one budget truth for every replica.

A decision reserves the worst case of its step (input tokens plus the granted output tokens at
the model's prices); an outcome settles the reservation and books the actual cost. Ordinary
steps draw only on the budget outside the two reserves; a ``final_synthesis`` step may also use
the synthesis reserve and a ``handoff`` step the hand-off reserve. Every store checks and commits
a reservation under the task's lock (a row lock in the SQL stores), so no interleaving of
requests, in one process or across replicas, can commit beyond the caps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from router_service.errors import Conflict
from router_service.schemas import Budget, LedgerView, Task

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
    """An outcome (or an expiry) booked against its reservation."""

    reservation: Reservation
    cost_dollars: float
    input_tokens: int
    output_tokens: int
    exceeded_reservation: bool
    expired: bool = False
    ledger: LedgerView | None = None  # the task's books right after this booking


class Booked(NamedTuple):
    """What was booked for a decision: its outcome's figures, or its estimate when it expired."""

    expired: bool
    cost_dollars: float
    input_tokens: int
    output_tokens: int


class DecisionRef(NamedTuple):
    """What an outcome for a decision needs to know about it."""

    decision_id: str
    task_id: str
    model: str | None
    action: str
    step_kind: str
    step_type: str
    max_output_tokens: int
    reserved_dollars: float


@dataclass
class TaskBooks:
    """A task's running totals: what the caps are checked against, without the reservations."""

    budget: Budget
    spent_dollars: float = 0.0
    input_tokens_used: int = 0
    output_tokens_used: int = 0
    retries_used: int = 0
    steps: int = 0
    closed: bool = False
    committed_by_kind: dict[str, float] = field(default_factory=dict)
    reserved_dollars: float = 0.0
    reserved_input_tokens: int = 0
    reserved_output_tokens: int = 0
    open_reservations: int = 0
    next_expiry: float = math.inf  # a lower bound: no open reservation expires earlier

    def hold(self, reservation: Reservation) -> None:
        """Open a reservation, keeping the running totals the caps are checked against."""
        self.open_reservations += 1
        self.reserved_dollars += reservation.dollars
        self.reserved_input_tokens += reservation.input_tokens
        self.reserved_output_tokens += reservation.output_tokens
        self.next_expiry = min(self.next_expiry, reservation.expires_at)

    def release(self, reservation: Reservation) -> None:
        self.open_reservations -= 1
        self.reserved_input_tokens -= reservation.input_tokens
        self.reserved_output_tokens -= reservation.output_tokens
        if self.open_reservations:
            self.reserved_dollars -= reservation.dollars
        else:
            self.reserved_dollars = 0.0  # no float residue once nothing is held
            self.next_expiry = math.inf

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

    def reserve(self, reservation: Reservation) -> None:
        """Check a reservation against the caps and hold it; raises if it does not fit."""
        if self.closed:
            raise task_closed(reservation.task_id)
        room = self.headroom(reservation.step_kind)
        if (
            reservation.dollars > room.dollars + EPSILON_DOLLARS
            or reservation.input_tokens > room.input_tokens
            or reservation.output_tokens > room.output_tokens
        ):
            raise BudgetExceeded(
                f"reservation of ${reservation.dollars:.6f} does not fit the task's budget",
                field="budget",
            )
        self.hold(reservation)
        self.commit(reservation.step_kind, reservation.dollars)
        self.steps += 1
        self.retries_used += int(reservation.is_retry)

    def book(
        self,
        reservation: Reservation,
        cost_dollars: float,
        input_tokens: int,
        output_tokens: int,
        expired: bool = False,
    ) -> Settlement:
        """Release a reservation and book what the step cost (its estimate, if it expired)."""
        self.release(reservation)
        self.spent_dollars += cost_dollars
        self.commit(reservation.step_kind, cost_dollars - reservation.dollars)
        self.input_tokens_used += input_tokens
        self.output_tokens_used += output_tokens
        return Settlement(
            reservation,
            cost_dollars,
            input_tokens,
            output_tokens,
            exceeded_reservation=exceeds(
                cost_dollars, output_tokens, reservation.dollars, reservation.output_tokens
            ),
            expired=expired,
            ledger=self.view(),
        )

    def expire(self, reservation: Reservation) -> Settlement:
        """Book an overdue reservation at its estimate (a crashed agent cannot leak budget)."""
        return self.book(
            reservation,
            reservation.dollars,
            reservation.input_tokens,
            reservation.output_tokens,
            expired=True,
        )

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


def exceeds(cost_dollars: float, output_tokens: int, reserved: float, granted: int) -> bool:
    """Whether a step's outcome went past what its decision reserved or granted."""
    return cost_dollars > reserved + EPSILON_DOLLARS or output_tokens > granted


def task_closed(task_id: str, already: bool = False) -> Conflict:
    """409 for a closed task: it takes no decisions (its in-flight outcomes still settle)."""
    what = "is already closed" if already else "is closed and takes no new decisions"
    return Conflict(
        f"task {task_id!r} {what}; open a new task for more steps", field="task_id", value=task_id
    )


def already_settled(decision_id: str, expired: bool) -> Conflict:
    """409 for a second outcome: the first one, or the expiry, was booked and stays booked."""
    if expired:
        why = "its reservation expired and was booked at its estimate; a late outcome is not booked"
    else:
        why = "it already has an outcome; each decision is booked once"
    return Conflict(f"decision {decision_id!r}: {why}", field="decision_id", value=decision_id)


class LedgerTransaction(Protocol):
    """Holds the task's books locked: read headroom, then reserve, with nothing in between."""

    books: TaskBooks

    def reserve(self, reservation: Reservation) -> None: ...
    def record(self, ref: DecisionRef, packed: bytes, is_step: bool) -> None:
        """Keep the decision and its packed JSON, committed with the reservation."""
        ...

    def __enter__(self) -> LedgerTransaction: ...
    def __exit__(self, *exc: object) -> None: ...


class LedgerDraft(LedgerTransaction, Protocol):
    """A task's books read without a lock: decide, then commit only if nobody changed them."""

    def commit(self) -> bool:
        """Write the reservations and records if the books are as read; False if they changed
        (the store then knows the books as they are: ``known_draft`` drafts on them)."""
        ...

    async def commit_on_loop(self) -> bool:
        """:meth:`commit`, its round trip awaited on the running event loop."""
        ...


class LedgerStore(Protocol):
    """The budget truth: tasks, their books, open reservations and decision history.

    Implementations: :mod:`router_service.ledger_memory` (unit tests),
    :mod:`router_service.ledger_sqlite` (the embedded default, one process) and
    :mod:`router_service.ledger_postgres` (shared by any number of router replicas).
    """

    remote: bool  # round trips over the network: callers keep them off the event loop

    def now(self) -> float: ...
    def open_task(self, task: Task) -> None: ...
    def task(self, task_id: str) -> Task: ...
    def transaction(self, task_id: str) -> LedgerTransaction: ...
    def draft(self, task_id: str) -> LedgerDraft | None:
        """The books for a decision made without holding the lock; None: use ``transaction``."""
        ...

    def settle(
        self, decision_id: str, cost_dollars: float, input_tokens: int, output_tokens: int
    ) -> Settlement: ...
    def expire(self) -> list[Settlement]: ...
    def booked(self, decision_id: str) -> Booked | None: ...
    def view(self, task_id: str) -> LedgerView: ...
    def close_task(self, task_id: str) -> LedgerView: ...
    def decision(self, decision_id: str) -> DecisionRef: ...
    def packed_decisions(self, task_id: str) -> list[bytes]: ...
    def step_decision_ids(self, task_id: str) -> list[str]: ...
    def purge_closed(self, closed_before: float) -> list[str]: ...
    def close(self) -> None: ...


class RemoteLedgerStore(LedgerStore, Protocol):
    """A store across the network (``remote`` is true): its round trips awaited on the event
    loop where a request waits on them, with no hop to a worker thread."""

    def known_draft(self, task_id: str) -> LedgerDraft | None:
        """A draft on the books as this process last saw them stored, without a round trip;
        None: ask ``draft``."""
        ...

    async def settle_on_loop(
        self, decision_id: str, cost_dollars: float, input_tokens: int, output_tokens: int
    ) -> Settlement:
        """:meth:`settle`, awaited on the running event loop."""
        ...
