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
from router_service.ledger import Clock, Reservation, Settlement, TaskBooks
from router_service.ledger_schema import (
    BOOK_COLUMNS,
    INSERT_RESERVATION,
    INSERT_SETTLEMENT,
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


def _prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def _safe(uri: str) -> str:
    """The URI without its password, for error messages."""
    info = psycopg.conninfo.conninfo_to_dict(uri)
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)
