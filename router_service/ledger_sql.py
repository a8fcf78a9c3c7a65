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
from typing import Any, ClassVar

from router_service.errors import Conflict
from router_service.ledger import (
    Clock,
    DecisionRef,
    Reservation,
    Settlement,
    TaskBooks,
    already_settled,
)
from router_service.ledger_memory import unknown_decision, unknown_task
from router_service.schemas import Budget, LedgerView, Task

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_tasks (
    task_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    trust_domain TEXT NOT NULL,
    task_type TEXT NOT NULL,
    budget TEXT NOT NULL,
    planned_steps INTEGER,
    tags TEXT NOT NULL,
    created_at TEXT NOT NULL,
    closed_at DOUBLE PRECISION,
    spent_dollars DOUBLE PRECISION NOT NULL DEFAULT 0,
    input_tokens_used BIGINT NOT NULL DEFAULT 0,
    output_tokens_used BIGINT NOT NULL DEFAULT 0,
    retries_used INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    committed_by_kind TEXT NOT NULL DEFAULT '{{}}',
    reserved_dollars DOUBLE PRECISION NOT NULL DEFAULT 0,
    reserved_input_tokens BIGINT NOT NULL DEFAULT 0,
    reserved_output_tokens BIGINT NOT NULL DEFAULT 0,
    open_reservations INTEGER NOT NULL DEFAULT 0,
    next_expiry DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS ledger_tasks_closed ON ledger_tasks (closed_at);
CREATE TABLE IF NOT EXISTS ledger_reservations (
    decision_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    model TEXT NOT NULL,
    step_kind TEXT NOT NULL,
    dollars DOUBLE PRECISION NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    is_retry INTEGER NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_reservations_task ON ledger_reservations (task_id, expires_at);
CREATE INDEX IF NOT EXISTS ledger_reservations_expiry ON ledger_reservations (expires_at);
CREATE TABLE IF NOT EXISTS ledger_settlements (
    decision_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    expired INTEGER NOT NULL,
    reserved_dollars DOUBLE PRECISION NOT NULL,
    cost_dollars DOUBLE PRECISION NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    settled_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_settlements_task ON ledger_settlements (task_id);
CREATE TABLE IF NOT EXISTS ledger_decisions (
    seq {serial} PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL,
    model TEXT,
    action TEXT NOT NULL,
    step_kind TEXT NOT NULL,
    step_type TEXT NOT NULL,
    max_output_tokens INTEGER NOT NULL,
    reserved_dollars DOUBLE PRECISION NOT NULL,
    is_step INTEGER NOT NULL,
    packed {blob} NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_decisions_task ON ledger_decisions (task_id, seq);
"""

BOOK_COLUMNS = (
    "spent_dollars, input_tokens_used, output_tokens_used, retries_used, steps, "
    "committed_by_kind, reserved_dollars, reserved_input_tokens, reserved_output_tokens, "
    "open_reservations, next_expiry"
)
TASK_COLUMNS = "tenant, trust_domain, task_type, budget, planned_steps, tags, created_at"
RESERVATION_COLUMNS = (
    "decision_id, task_id, model, step_kind, dollars, input_tokens, output_tokens, is_retry, "
    "expires_at"
)
REF_COLUMNS = (
    "decision_id, task_id, model, action, step_kind, step_type, max_output_tokens, reserved_dollars"
)
PURGE_BATCH = 500


def _reservation(row: tuple[Any, ...]) -> Reservation:
    decision_id, task_id, model, kind, dollars, tokens_in, tokens_out, retry, expires = row
    return Reservation(
        decision_id, task_id, model, kind, dollars, tokens_in, tokens_out, bool(retry), expires
    )


class _SqlTransaction:
    """A task's books read under its row lock; committed (or rolled back) on exit."""

    def __init__(self, store: SqlLedgerStore, task_id: str) -> None:
        self._store = store
        self._task_id = task_id
        self._stack = ExitStack()

    def __enter__(self) -> _SqlTransaction:
        self._conn = self._stack.enter_context(self._store._txn())
        try:
            self.books = self._store._lock_books(self._conn, self._task_id)
            if self.books.closed:
                raise Conflict(f"task {self._task_id!r} is closed", field="task_id")
            self._dirty = bool(self._store._expire_books(self._conn, self._task_id, self.books))
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        return self

    def reserve(self, reservation: Reservation) -> None:
        """Check against the locked books, then write the reservation (committed on exit)."""
        self.books.reserve(reservation)
        self._store._insert_reservation(self._conn, reservation)
        self._dirty = True

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None and self._dirty:
            try:
                self._store._write_books(self._conn, self._task_id, self.books)
            except BaseException:
                self._stack.__exit__(*sys.exc_info())
                raise
        self._stack.__exit__(*exc)


class SqlLedgerStore:
    """Tasks, books, reservations, settlements and decisions in SQL tables."""

    lock_suffix: ClassVar[str] = ""
    placeholder: ClassVar[str] = "?"

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

    def _books_row(self, conn: Any, task_id: str, lock: bool) -> TaskBooks:
        suffix = self.lock_suffix if lock else ""
        row = self._run(
            conn,
            f"SELECT budget, closed_at, {BOOK_COLUMNS} FROM ledger_tasks WHERE task_id = ?{suffix}",
            (task_id,),
        ).fetchone()
        if row is None:
            raise unknown_task(task_id)
        budget, closed_at, spent, used_in, used_out, retries, steps, by_kind = row[:8]
        reserved, reserved_in, reserved_out, count, next_expiry = row[8:]
        return TaskBooks(
            budget=Budget.model_validate_json(budget),
            spent_dollars=spent,
            input_tokens_used=used_in,
            output_tokens_used=used_out,
            retries_used=retries,
            steps=steps,
            closed=closed_at is not None,
            committed_by_kind=json.loads(by_kind),
            reserved_dollars=reserved,
            reserved_input_tokens=reserved_in,
            reserved_output_tokens=reserved_out,
            open_reservations=count,
            next_expiry=math.inf if next_expiry is None else next_expiry,
        )

    def _lock_books(self, conn: Any, task_id: str) -> TaskBooks:
        return self._books_row(conn, task_id, lock=True)

    def _write_books(
        self, conn: Any, task_id: str, books: TaskBooks, closed_at: float | None = None
    ) -> None:
        closing = ", closed_at = ?" if closed_at is not None else ""
        self._run(
            conn,
            "UPDATE ledger_tasks SET spent_dollars = ?, input_tokens_used = ?, "
            "output_tokens_used = ?, retries_used = ?, steps = ?, committed_by_kind = ?, "
            "reserved_dollars = ?, reserved_input_tokens = ?, reserved_output_tokens = ?, "
            f"open_reservations = ?, next_expiry = ?{closing} WHERE task_id = ?",
            (
                books.spent_dollars,
                books.input_tokens_used,
                books.output_tokens_used,
                books.retries_used,
                books.steps,
                json.dumps(books.committed_by_kind),
                books.reserved_dollars,
                books.reserved_input_tokens,
                books.reserved_output_tokens,
                books.open_reservations,
                None if math.isinf(books.next_expiry) else books.next_expiry,
                *((closed_at,) if closed_at is not None else ()),
                task_id,
            ),
        )

    def _insert_reservation(self, conn: Any, r: Reservation) -> None:
        self._run(
            conn,
            f"INSERT INTO ledger_reservations ({RESERVATION_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r.decision_id,
                r.task_id,
                r.model,
                r.step_kind,
                r.dollars,
                r.input_tokens,
                r.output_tokens,
                int(r.is_retry),
                r.expires_at,
            ),
        )

    def _record(self, conn: Any, settlement: Settlement) -> None:
        """One settlement row per decision: a second booking would break the primary key."""
        r = settlement.reservation
        self._run(
            conn,
            "INSERT INTO ledger_settlements (decision_id, task_id, expired, reserved_dollars, "
            "cost_dollars, input_tokens, output_tokens, settled_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r.decision_id,
                r.task_id,
                int(settlement.expired),
                r.dollars,
                settlement.cost_dollars,
                settlement.input_tokens,
                settlement.output_tokens,
                self._clock(),
            ),
        )

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
        settled = [books.expire(_reservation(row)) for row in rows]
        for settlement in settled:
            self._record(conn, settlement)
        (earliest,) = self._run(
            conn, "SELECT min(expires_at) FROM ledger_reservations WHERE task_id = ?", (task_id,)
        ).fetchone()
        books.next_expiry = math.inf if earliest is None else earliest
        return settled

    def transaction(self, task_id: str) -> _SqlTransaction:
        return _SqlTransaction(self, task_id)

    def settle(
        self, decision_id: str, cost_dollars: float, input_tokens: int, output_tokens: int
    ) -> Settlement:
        """Delete the reservation and book the cost in one transaction; a second time, 409."""
        with self._txn() as conn:
            owner = self._run(
                conn,
                "SELECT task_id FROM ledger_reservations WHERE decision_id = ?",
                (decision_id,),
            ).fetchone()
            if owner is None:
                self._raise_unsettleable(conn, decision_id)
            books = self._lock_books(conn, owner[0])
            rows = self._run(
                conn,
                f"DELETE FROM ledger_reservations WHERE decision_id = ? "
                f"RETURNING {RESERVATION_COLUMNS}",
                (decision_id,),
            ).fetchall()
            if not rows:  # settled or expired by someone else while we waited for the lock
                raise already_settled(decision_id)
            reservation = _reservation(rows[0])
            settlement = books.book(reservation, cost_dollars, input_tokens, output_tokens)
            self._record(conn, settlement)
            self._write_books(conn, owner[0], books)
            return settlement

    def _raise_unsettleable(self, conn: Any, decision_id: str) -> None:
        settled = self._run(
            conn, "SELECT 1 FROM ledger_settlements WHERE decision_id = ?", (decision_id,)
        ).fetchone()
        raise already_settled(decision_id) if settled else unknown_decision(decision_id)

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
            with self._txn() as conn:
                books = self._lock_books(conn, task_id)
                settled.extend(self._expire_books(conn, task_id, books))
                self._write_books(conn, task_id, books)
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
                raise Conflict(f"task {task_id!r} is already closed", field="task_id")
            self._expire_books(conn, task_id, books)
            self._write_books(conn, task_id, books, closed_at=self._clock())
            return books.view()

    # --- tasks and decisions ----------------------------------------------------------------

    def open_task(self, task: Task) -> None:
        with self._txn() as conn:
            inserted = self._run(
                conn,
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

    def add_decision(self, ref: DecisionRef, packed: bytes, is_step: bool) -> None:
        with self._txn() as conn:
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
