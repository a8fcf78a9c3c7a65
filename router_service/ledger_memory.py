"""The ledger store in process memory: a lock per task. For unit tests (``memory://``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

from router_service.errors import Conflict, NotFound
from router_service.ledger import (
    Booked,
    Clock,
    DecisionRef,
    Reservation,
    Settlement,
    TaskBooks,
    already_settled,
    task_closed,
)
from router_service.schemas import LedgerView, Task


def unknown_task(task_id: str) -> NotFound:
    return NotFound(f"unknown task {task_id!r}", field="task_id", value=task_id)


def unknown_decision(decision_id: str) -> NotFound:
    return NotFound(f"unknown decision {decision_id!r}", field="decision_id", value=decision_id)


@dataclass
class _Entry:
    task: Task
    books: TaskBooks
    lock: threading.Lock = field(default_factory=threading.Lock)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    decision_ids: list[str] = field(default_factory=list)
    step_decision_ids: list[str] = field(default_factory=list)
    booked: dict[str, Booked] = field(default_factory=dict)
    closed_at: float | None = None


class _Transaction:
    """Changes the books in place; an exception in the block puts them back as they were."""

    def __init__(self, store: InMemoryLedger, entry: _Entry) -> None:
        self._store = store
        self._entry = entry
        self._added: list[str] = []
        self._history: list[tuple[DecisionRef, bytes, bool]] = []

    def __enter__(self) -> _Transaction:
        self._entry.lock.acquire()
        try:
            if self._entry.books.closed:
                raise task_closed(self._entry.task.task_id)
            self._store._expire_entry(self._entry)
        except BaseException:
            self._entry.lock.release()
            raise
        self.books = self._entry.books
        self._saved = replace(self.books, committed_by_kind=dict(self.books.committed_by_kind))
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._entry.books = self._saved
            for decision_id in self._added:
                del self._entry.reservations[decision_id]
                del self._store._owner[decision_id]
        else:
            for ref, packed, is_step in self._history:
                self._entry.decision_ids.append(ref.decision_id)
                if is_step:
                    self._entry.step_decision_ids.append(ref.decision_id)
                self._store._decisions[ref.decision_id] = (ref, packed)
        self._entry.lock.release()

    def reserve(self, reservation: Reservation) -> None:
        self.books.reserve(reservation)
        self._entry.reservations[reservation.decision_id] = reservation
        self._store._owner[reservation.decision_id] = reservation.task_id
        self._added.append(reservation.decision_id)

    def record(self, ref: DecisionRef, packed: bytes, is_step: bool) -> None:
        self._history.append((ref, packed, is_step))


class InMemoryLedger:
    """Every task's books, reservations and decisions in dictionaries of one process."""

    remote = False

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._owner: dict[str, str] = {}
        self._decisions: dict[str, tuple[DecisionRef, bytes]] = {}
        self._registry_lock = threading.Lock()

    def now(self) -> float:
        return self._clock()

    def open_task(self, task: Task) -> None:
        with self._registry_lock:
            if task.task_id in self._entries:
                raise Conflict(
                    f"task {task.task_id!r} already exists", field="task_id", value=task.task_id
                )
            self._entries[task.task_id] = _Entry(task, TaskBooks(task.budget))

    def _entry(self, task_id: str) -> _Entry:
        entry = self._entries.get(task_id)
        if entry is None:
            raise unknown_task(task_id)
        return entry

    def task(self, task_id: str) -> Task:
        return self._entry(task_id).task

    def draft(self, task_id: str) -> None:
        """None: the in-process lock is cheap enough to hold while deciding."""
        return None

    def transaction(self, task_id: str) -> _Transaction:
        return _Transaction(self, self._entry(task_id))

    def settle(
        self, decision_id: str, cost_dollars: float, input_tokens: int, output_tokens: int
    ) -> Settlement:
        """Release a reservation and book what the step really cost, once."""
        task_id = self._owner.get(decision_id)
        if task_id is None:
            raise unknown_decision(decision_id)
        entry = self._entry(task_id)
        with entry.lock:
            reservation = entry.reservations.pop(decision_id, None)
            if reservation is None:
                raise already_settled(decision_id, expired=entry.booked[decision_id].expired)
            entry.booked[decision_id] = Booked(False, cost_dollars, input_tokens, output_tokens)
            return entry.books.book(reservation, cost_dollars, input_tokens, output_tokens)

    def booked(self, decision_id: str) -> Booked | None:
        task_id = self._owner.get(decision_id)
        entry = self._entries.get(task_id) if task_id is not None else None
        return None if entry is None else entry.booked.get(decision_id)

    def _expire_entry(self, entry: _Entry) -> list[Settlement]:
        now = self._clock()
        if now < entry.books.next_expiry:
            return []
        stale = [r for r in entry.reservations.values() if r.expires_at <= now]
        settled = []
        for reservation in stale:
            del entry.reservations[reservation.decision_id]
            settled.append(entry.books.expire(reservation))
            entry.booked[reservation.decision_id] = Booked(
                True, reservation.dollars, reservation.input_tokens, reservation.output_tokens
            )
        live = (r.expires_at for r in entry.reservations.values())
        entry.books.next_expiry = min(live, default=entry.books.next_expiry)
        return settled

    def expire(self) -> list[Settlement]:
        """Book every overdue reservation at its estimate."""
        settled: list[Settlement] = []
        for entry in list(self._entries.values()):
            with entry.lock:
                settled.extend(self._expire_entry(entry))
        return settled

    def close_task(self, task_id: str) -> LedgerView:
        entry = self._entry(task_id)
        with entry.lock:
            if entry.books.closed:
                raise task_closed(task_id, already=True)
            self._expire_entry(entry)
            entry.books.closed = True
            entry.closed_at = self._clock()
            entry.task = entry.task.model_copy(update={"status": "closed"})
            return entry.books.view()

    def view(self, task_id: str) -> LedgerView:
        entry = self._entry(task_id)
        with entry.lock:
            self._expire_entry(entry)
            return entry.books.view()

    def decision(self, decision_id: str) -> DecisionRef:
        found = self._decisions.get(decision_id)
        if found is None:
            raise unknown_decision(decision_id)
        return found[0]

    def packed_decisions(self, task_id: str) -> list[bytes]:
        entry = self._entry(task_id)
        with entry.lock:
            return [self._decisions[d][1] for d in entry.decision_ids]

    def step_decision_ids(self, task_id: str) -> list[str]:
        entry = self._entry(task_id)
        with entry.lock:
            return list(entry.step_decision_ids)

    def purge_closed(self, closed_before: float) -> list[str]:
        """Drop tasks closed before ``closed_before`` with nothing left open; their ids."""
        with self._registry_lock:
            gone = [
                task_id
                for task_id, entry in self._entries.items()
                if entry.closed_at is not None
                and entry.closed_at < closed_before
                and not entry.reservations
            ]
            for task_id in gone:
                for decision_id in self._entries.pop(task_id).decision_ids:
                    self._decisions.pop(decision_id, None)
                    self._owner.pop(decision_id, None)
        return gone

    def close(self) -> None:
        """Nothing to release: the books live and die with the process."""
