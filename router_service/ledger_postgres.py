"""The shared ledger store: PostgreSQL, one truth for any number of router replicas.

Each change to a task's books is one transaction that starts with ``SELECT ... FOR UPDATE`` on
the task's row: replicas deciding for the same task queue on that lock, so the headroom a
decision reads is the headroom it commits against, and different tasks never wait for each
other. Settling deletes the reservation row under the same lock and inserts a settlement row
keyed by decision id, so an outcome and an expiry of one decision cannot both be booked.
Round trips are what a decision pays for here, so the writes of each step are one statement
(data-modifying CTEs), reads run outside transactions, and settling finds the reservation and
locks its task in one query.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from router_service.errors import ConfigError, Unavailable
from router_service.ledger import (
    Clock,
    DecisionRef,
    Reservation,
    Settlement,
    TaskBooks,
    task_closed,
)
from router_service.ledger_schema import (
    BOOK_COLUMNS,
    INSERT_RESERVATION,
    INSERT_SETTLEMENT,
    REF_COLUMNS,
    RESERVATION_COLUMNS,
    SCHEMA,
    SETTLEMENT_COLUMNS,
    books_from_row,
    books_params,
    reservation_from_row,
    reservation_params,
    settlement_params,
    update_books_sql,
)
from router_service.ledger_sql import SqlLedgerStore

SCHEMA_LOCK = 0x6C656467  # pg_advisory_xact_lock key: replicas starting together create once
CONNECT_TIMEOUT_SECONDS = 10.0


class PostgresLedgerStore(SqlLedgerStore):
    """The ledger in a PostgreSQL database, reached through a small connection pool."""

    lock_suffix = " FOR UPDATE"
    placeholder = "%s"
    remote = True

    def __init__(
        self,
        uri: str,
        clock: Clock = time.time,
        pool_size: int = 4,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(clock)
        self._pool = ConnectionPool(
            uri,
            min_size=1,
            max_size=pool_size,
            open=False,
            name="budget-router-ledger",
            timeout=connect_timeout,
            kwargs={"autocommit": True},  # transactions are explicit: reads need no BEGIN
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
            with self._txn() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for statement in SCHEMA.format(
                    serial="BIGSERIAL", blob="BYTEA", without_rowid=""
                ).split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except (PoolTimeout, Unavailable) as exc:
            self._pool.close()
            raise ConfigError(
                f"BUDGET_ROUTER_LEDGER_URI: cannot reach PostgreSQL at {_safe(uri)} "
                f"within {connect_timeout:g} s ({exc})"
            ) from exc

    @contextmanager
    def _txn(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise Unavailable(f"the ledger store is unreachable: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise Unavailable(f"the ledger store is unreachable: {exc}") from exc

    def _write_one(self, text: str, params: tuple[Any, ...]) -> psycopg.Cursor:
        with self._read() as conn:  # autocommit: the statement is its own transaction
            return self._run(conn, text, params)

    def draft(self, task_id: str) -> PostgresDraft | None:
        """The books read in one unlocked query; None when overdue reservations need the lock."""
        with self._read() as conn:
            row = self._task_row(conn, task_id, lock=False)
        books = books_from_row(row)
        if books.closed:
            raise task_closed(task_id)
        if self._clock() >= books.next_expiry:
            return None
        return PostgresDraft(self, task_id, books, row[2:])

    def _commit_draft(self, draft: PostgresDraft) -> bool:
        """One statement: the books written only if they still hold what was read, and with
        them the draft's reservations and records; whether it was written."""
        parts, params = [], [*books_params(draft.task_id, draft.books, None), *draft.seen]
        for index, reservation in enumerate(draft.pending):
            parts.append(f"held{index} AS ({_INSERT_RESERVATION_IF})")
            params.extend(reservation_params(reservation))
        for index, (ref, packed, is_step) in enumerate(draft.history):
            parts.append(f"logged{index} AS ({_INSERT_DECISION_IF})")
            params.extend((*ref, int(is_step), packed))
        ctes = "".join(f", {part}" for part in parts)
        with self._read() as conn:  # autocommit: one statement, one transaction
            (written,) = self._run(
                conn, f"WITH kept AS ({_UPDATE_BOOKS_IF}){ctes} SELECT count(*) FROM kept", params
            ).fetchone()
        return written == 1

    def _commit_reservations(
        self, conn: Any, task_id: str, reservations: list[Reservation], books: TaskBooks
    ) -> None:
        if len(reservations) != 1:
            super()._commit_reservations(conn, task_id, reservations, books)
            return
        self._run(
            conn,
            f"WITH held AS ({INSERT_RESERVATION}) {update_books_sql(None)}",
            (*reservation_params(reservations[0]), *books_params(task_id, books, None)),
        )

    def _lock_for_settling(
        self, conn: Any, decision_id: str
    ) -> tuple[Reservation, TaskBooks] | None:
        columns = _prefixed("r", RESERVATION_COLUMNS)
        row = self._run(
            conn,
            f"SELECT {columns}, t.budget, t.closed_at, {_prefixed('t', BOOK_COLUMNS)} "
            "FROM ledger_reservations r JOIN ledger_tasks t ON t.task_id = r.task_id "
            "WHERE r.decision_id = ? FOR UPDATE OF t",
            (decision_id,),
        ).fetchone()
        if row is None:
            return None
        width = len(RESERVATION_COLUMNS.split(","))
        return reservation_from_row(row[:width]), books_from_row(row[width:])

    def _book_settlement(self, conn: Any, settlement: Settlement, books: TaskBooks) -> bool:
        r = settlement.reservation
        (deleted,) = self._run(
            conn,
            "WITH gone AS (DELETE FROM ledger_reservations WHERE decision_id = ? "
            "RETURNING decision_id), "
            f"booked AS ({INSERT_SETTLEMENT.split(' VALUES ')[0]} "
            f"SELECT {', '.join(['?'] * len(SETTLEMENT_COLUMNS.split(',')))} FROM gone), "
            f"kept AS ({update_books_sql(None)} AND EXISTS (SELECT 1 FROM gone)) "
            "SELECT count(*) FROM gone",
            (
                r.decision_id,
                *settlement_params(settlement, self._clock()),
                *books_params(r.task_id, books, None),
            ),
        ).fetchone()
        return deleted == 1

    def close(self) -> None:
        self._pool.close()


class PostgresDraft:
    """A decision's view of a task's books, committed by :meth:`commit` if still current.

    Decisions for one task rarely overlap (an agent's steps come one after another), so
    checking at commit beats holding the row lock while the policy scores and samples.
    """

    def __init__(
        self, store: PostgresLedgerStore, task_id: str, books: TaskBooks, seen: tuple[Any, ...]
    ) -> None:
        self._store = store
        self.task_id = task_id
        self.books = books
        self.seen = seen  # the book columns as read, compared at commit
        self.pending: list[Reservation] = []
        self.history: list[tuple[DecisionRef, bytes, bool]] = []

    def __enter__(self) -> PostgresDraft:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing: :meth:`commit` writes, off the event loop."""

    def reserve(self, reservation: Reservation) -> None:
        self.books.reserve(reservation)
        self.pending.append(reservation)

    def record(self, ref: DecisionRef, packed: bytes, is_step: bool) -> None:
        self.history.append((ref, packed, is_step))

    def commit(self) -> bool:
        return self._store._commit_draft(self)


def _marks(columns: str) -> str:
    return ", ".join(["?"] * len(columns.split(",")))


_UPDATE_BOOKS_IF = (
    f"{update_books_sql(None)} AND closed_at IS NULL "
    f"AND ({BOOK_COLUMNS}) IS NOT DISTINCT FROM ({_marks(BOOK_COLUMNS)}) RETURNING task_id"
)
_INSERT_RESERVATION_IF = (
    f"INSERT INTO ledger_reservations ({RESERVATION_COLUMNS}) "
    f"SELECT {_marks(RESERVATION_COLUMNS)} FROM kept"
)
_INSERT_DECISION_IF = (
    f"INSERT INTO ledger_decisions ({REF_COLUMNS}, is_step, packed) "
    f"SELECT {_marks(REF_COLUMNS)}, ?, ? FROM kept"
)


def _prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def _safe(uri: str) -> str:
    """The URI without its password, for error messages."""
    info = psycopg.conninfo.conninfo_to_dict(uri)
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)
