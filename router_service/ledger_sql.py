"""The ledger store over SQL, shared by the SQLite and PostgreSQL stores.

One row per task holds its metadata and running totals; open reservations, settlements (one
row per booked decision, whose primary key makes double booking impossible) and decision
history are rows of their own. Every change to a task's books happens in one transaction that
first locks the task's row (``SELECT ... FOR UPDATE`` in PostgreSQL, SQLite's write lock), so
the check and the commit of a reservation are atomic across threads, processes and replicas.
Subclasses provide the connection (``_txn``, ``_read``) and the dialect.
"""

from __future__ import annotations

import json
import math
import sys
from contextlib import AbstractContextManager, ExitStack
from datetime import datetime
from typing import Any, ClassVar, NoReturn

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
from router_service.ledger_memory import unknown_decision, unknown_task
from router_service.ledger_schema import (
    BOOK_COLUMNS,
    INSERT_RESERVATION,
    INSERT_SETTLEMENT,
    PURGE_BATCH,
    REF_COLUMNS,
    RESERVATION_COLUMNS,
    TASK_COLUMNS,
    books_from_row,
    books_params,
    reservation_from_row,
    reservation_params,
    settlement_params,
    update_books_sql,
)
from router_service.schemas import Budget, LedgerView, Task


class _SqlTransaction:
    """A task's books read under its row lock; committed (or rolled back) on exit."""

    def __init__(self, store: SqlLedgerStore, task_id: str) -> None:
        self._store = store
        self._task_id = task_id
        self._stack = ExitStack()
        self._pending: list[Reservation] = []
        self._history: list[tuple[DecisionRef, bytes, bool]] = []

    def __enter__(self) -> _SqlTransaction:
        self._conn = self._stack.enter_context(self._store._txn())
        try:
            self.books = self._store._lock_books(self._conn, self._task_id)
            if self.books.closed:
                raise task_closed(self._task_id)
            self._dirty = bool(self._store._expire_books(self._conn, self._task_id, self.books))
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        return self

    def reserve(self, reservation: Reservation) -> None:
        """Check against the locked books; the reservation is written and committed on exit."""
        self.books.reserve(reservation)
        self._pending.append(reservation)

    def record(self, ref: DecisionRef, packed: bytes, is_step: bool) -> None:
        """The decision's history row, written on exit with the reservation."""
        self._history.append((ref, packed, is_step))

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            try:
                if self._dirty or self._pending:
                    self._store._commit_reservations(
                        self._conn, self._task_id, self._pending, self.books
                    )
                for ref, packed, is_step in self._history:
                    self._store._insert_decision(self._conn, ref, packed, is_step)
            except BaseException:
                self._stack.__exit__(*sys.exc_info())
                raise
        self._stack.__exit__(*exc)


class SqlLedgerStore:
    """Tasks, books, reservations, settlements and decisions in SQL tables."""

    lock_suffix: ClassVar[str] = ""
    placeholder: ClassVar[str] = "?"
    remote: ClassVar[bool] = False

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._sql_cache: dict[str, str] = {}

    # --- what a dialect provides -------------------------------------------------------------

    def _txn(self) -> AbstractContextManager[Any]:
        """A connection inside a write transaction, committed when the block succeeds."""
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Any]:
        """A connection for reads outside any lock."""
        raise NotImplementedError

    def _write_one(self, text: str, params: tuple[Any, ...]) -> Any:
        """One statement in a transaction of its own; its cursor."""
        with self._txn() as conn:
            return self._run(conn, text, params)

    def close(self) -> None:
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        sql = self._sql_cache.get(text)
        if sql is None:
            sql = text.replace("?", self.placeholder)
            self._sql_cache[text] = sql
        return sql

    def _run(self, conn: Any, text: str, params: tuple[Any, ...] = ()) -> Any:
        return conn.execute(self._sql(text), params)

    # --- books ----------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def _task_row(self, conn: Any, task_id: str, lock: bool) -> tuple[Any, ...]:
        """The task's budget, closing time and book columns, as stored."""
        suffix = self.lock_suffix if lock else ""
        row = self._run(
            conn,
            f"SELECT budget, closed_at, {BOOK_COLUMNS} FROM ledger_tasks WHERE task_id = ?{suffix}",
            (task_id,),
        ).fetchone()
        if row is None:
            raise unknown_task(task_id)
        return tuple(row)

    def _books_row(self, conn: Any, task_id: str, lock: bool) -> TaskBooks:
        return books_from_row(self._task_row(conn, task_id, lock))

    def _lock_books(self, conn: Any, task_id: str) -> TaskBooks:
        return self._books_row(conn, task_id, lock=True)

    def _write_books(
        self, conn: Any, task_id: str, books: TaskBooks, closed_at: float | None = None
    ) -> None:
        self._run(conn, update_books_sql(closed_at), books_params(task_id, books, closed_at))

    def _commit_reservations(
        self, conn: Any, task_id: str, reservations: list[Reservation], books: TaskBooks
    ) -> None:
        """Write the transaction's reservations and the books they changed."""
        for reservation in reservations:
            self._insert_reservation(conn, reservation)
        self._write_books(conn, task_id, books)

    def _insert_reservation(self, conn: Any, r: Reservation) -> None:
        self._run(conn, INSERT_RESERVATION, reservation_params(r))

    def _record(self, conn: Any, settlement: Settlement) -> None:
        """One settlement row per decision: a second booking would break the primary key."""
        self._run(conn, INSERT_SETTLEMENT, settlement_params(settlement, self._clock()))

    def _expire_books(self, conn: Any, task_id: str, books: TaskBooks) -> list[Settlement]:
        now = self._clock()
        if now < books.next_expiry:
            return []
        rows = self._run(
            conn,
            f"DELETE FROM ledger_reservations WHERE task_id = ? AND expires_at <= ? "
            f"RETURNING {RESERVATION_COLUMNS}",
            (task_id, now),
        ).fetchall()
        settled = [books.expire(reservation_from_row(row)) for row in rows]
        for settlement in settled:
            self._record(conn, settlement)
        (earliest,) = self._run(
            conn, "SELECT min(expires_at) FROM ledger_reservations WHERE task_id = ?", (task_id,)
        ).fetchone()
        books.next_expiry = math.inf if earliest is None else earliest
        return settled

    def draft(self, task_id: str) -> Any:
        """None here: a local store's lock is held while deciding (PostgreSQL drafts)."""
        return None

    def transaction(self, task_id: str) -> _SqlTransaction:
        return _SqlTransaction(self, task_id)

    def settle(
        self, decision_id: str, cost_dollars: float, input_tokens: int, output_tokens: int
    ) -> Settlement:
        """Delete the reservation and book the cost in one transaction; a second time, 409."""
        with self._txn() as conn:
            found = self._lock_for_settling(conn, decision_id)
            if found is None:
                self._raise_unsettleable(conn, decision_id)
            reservation, books = found
            settlement = books.book(reservation, cost_dollars, input_tokens, output_tokens)
            if not self._book_settlement(conn, settlement, books):
                self._raise_unsettleable(conn, decision_id)  # settled or expired meanwhile
            return settlement

    def _lock_for_settling(
        self, conn: Any, decision_id: str
    ) -> tuple[Reservation, TaskBooks] | None:
        """The open reservation (rows never change) and its task's books, locked."""
        row = self._run(
            conn,
            f"SELECT {RESERVATION_COLUMNS} FROM ledger_reservations WHERE decision_id = ?",
            (decision_id,),
        ).fetchone()
        if row is None:
            return None
        reservation = reservation_from_row(row)
        return reservation, self._lock_books(conn, reservation.task_id)

    def _book_settlement(self, conn: Any, settlement: Settlement, books: TaskBooks) -> bool:
        """Delete the reservation, record the settlement, write the books; False if gone."""
        r = settlement.reservation
        gone = self._run(
            conn,
            "DELETE FROM ledger_reservations WHERE decision_id = ? RETURNING decision_id",
            (r.decision_id,),
        ).fetchall()
        if not gone:
            return False
        self._record(conn, settlement)
        self._write_books(conn, r.task_id, books)
        return True

    def _raise_unsettleable(self, conn: Any, decision_id: str) -> NoReturn:
        settled = self._run(
            conn, "SELECT expired FROM ledger_settlements WHERE decision_id = ?", (decision_id,)
        ).fetchone()
        if settled is None:
            raise unknown_decision(decision_id)
        raise already_settled(decision_id, expired=bool(settled[0]))

    def expire(self) -> list[Settlement]:
        """Book every overdue reservation at its estimate, task by task."""
        with self._read() as conn:
            rows = self._run(
                conn,
                "SELECT DISTINCT task_id FROM ledger_reservations WHERE expires_at <= ?",
                (self._clock(),),
            ).fetchall()
        settled: list[Settlement] = []
        for (task_id,) in rows:
            try:
                with self._txn() as conn:
                    books = self._lock_books(conn, task_id)
                    settled.extend(self._expire_books(conn, task_id, books))
                    self._write_books(conn, task_id, books)
            except NotFound:  # another replica expired and purged it meanwhile
                continue
        return settled

    def view(self, task_id: str) -> LedgerView:
        with self._read() as conn:
            books = self._books_row(conn, task_id, lock=False)
        if books.next_expiry <= self._clock():
            with self._txn() as conn:
                books = self._lock_books(conn, task_id)
                self._expire_books(conn, task_id, books)
                self._write_books(conn, task_id, books)
        return books.view()

    def close_task(self, task_id: str) -> LedgerView:
        with self._txn() as conn:
            books = self._lock_books(conn, task_id)
            if books.closed:
                raise task_closed(task_id, already=True)
            self._expire_books(conn, task_id, books)
            books.closed = True
            self._write_books(conn, task_id, books, closed_at=self._clock())
            return books.view()

    # --- tasks and decisions ----------------------------------------------------------------

    def open_task(self, task: Task) -> None:
        inserted = self._write_one(
            f"INSERT INTO ledger_tasks (task_id, {TASK_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO NOTHING",
            (
                task.task_id,
                task.tenant,
                task.trust_domain,
                task.task_type,
                task.budget.model_dump_json(),
                task.planned_steps,
                json.dumps(task.tags),
                task.created_at.isoformat(),
            ),
        ).rowcount
        if inserted != 1:
            raise Conflict(
                f"task {task.task_id!r} already exists", field="task_id", value=task.task_id
            )

    def task(self, task_id: str) -> Task:
        with self._read() as conn:
            row = self._run(
                conn,
                f"SELECT {TASK_COLUMNS}, closed_at FROM ledger_tasks WHERE task_id = ?",
                (task_id,),
            ).fetchone()
        if row is None:
            raise unknown_task(task_id)
        tenant, domain, task_type, budget, planned, tags, created, closed_at = row
        return Task(
            task_id=task_id,
            tenant=tenant,
            trust_domain=domain,
            task_type=task_type,
            budget=Budget.model_validate_json(budget),
            planned_steps=planned,
            tags=json.loads(tags),
            status="open" if closed_at is None else "closed",
            created_at=datetime.fromisoformat(created),
        )

    def _insert_decision(self, conn: Any, ref: DecisionRef, packed: bytes, is_step: bool) -> None:
        self._run(
            conn,
            f"INSERT INTO ledger_decisions ({REF_COLUMNS}, is_step, packed) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*ref, int(is_step), packed),
        )

    def decision(self, decision_id: str) -> DecisionRef:
        with self._read() as conn:
            row = self._run(
                conn,
                f"SELECT {REF_COLUMNS} FROM ledger_decisions WHERE decision_id = ?",
                (decision_id,),
            ).fetchone()
        if row is None:
            raise unknown_decision(decision_id)
        return DecisionRef(*row)

    def packed_decisions(self, task_id: str) -> list[bytes]:
        return [bytes(p) for p in self._column(task_id, "packed", "")]

    def step_decision_ids(self, task_id: str) -> list[str]:
        return self._column(task_id, "decision_id", " AND is_step = 1")

    def _column(self, task_id: str, column: str, where: str) -> list[Any]:
        with self._read() as conn:
            rows = self._run(
                conn,
                f"SELECT {column} FROM ledger_decisions WHERE task_id = ?{where} ORDER BY seq",
                (task_id,),
            ).fetchall()
        return [value for (value,) in rows]

    def purge_closed(self, closed_before: float) -> list[str]:
        """Delete tasks closed before ``closed_before`` with nothing open, and their history."""
        with self._txn() as conn:
            rows = self._run(
                conn,
                "SELECT task_id FROM ledger_tasks WHERE closed_at < ? AND open_reservations = 0 "
                f"LIMIT {PURGE_BATCH}",
                (closed_before,),
            ).fetchall()
            cursor = conn.cursor()
            for table in ("ledger_decisions", "ledger_settlements", "ledger_tasks"):
                cursor.executemany(self._sql(f"DELETE FROM {table} WHERE task_id = ?"), rows)
        return [task_id for (task_id,) in rows]

    def booked(self, decision_id: str) -> Booked | None:
        with self._read() as conn:
            row = self._run(
                conn,
                "SELECT expired, cost_dollars, input_tokens, output_tokens "
                "FROM ledger_settlements WHERE decision_id = ?",
                (decision_id,),
            ).fetchone()
        return None if row is None else Booked(bool(row[0]), *row[1:])

    def settlements(self, task_id: str) -> list[tuple[str, bool, float, int, int]]:
        """What was booked for the task, decision by decision (for audits and tests)."""
        with self._read() as conn:
            rows = self._run(
                conn,
                "SELECT decision_id, expired, cost_dollars, input_tokens, output_tokens "
                "FROM ledger_settlements WHERE task_id = ? ORDER BY decision_id",
                (task_id,),
            ).fetchall()
        return [(d, bool(expired), cost, i, o) for d, expired, cost, i, o in rows]
