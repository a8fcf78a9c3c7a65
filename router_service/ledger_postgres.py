"""The shared ledger store: PostgreSQL, one truth for any number of router replicas.

Each change to a task's books is one transaction that starts with ``SELECT ... FOR UPDATE`` on
the task's row: replicas deciding for the same task queue on that lock, so the headroom a
decision reads is the headroom it commits against, and different tasks never wait for each
other. Settling deletes the reservation row under the same lock and inserts a settlement row
keyed by decision id, so an outcome and an expiry of one decision cannot both be booked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from router_service.errors import ConfigError, Unavailable
from router_service.ledger import Clock
from router_service.ledger_sql import SCHEMA, SqlLedgerStore

SCHEMA_LOCK = 0x6C656467  # pg_advisory_xact_lock key: replicas starting together create once
CONNECT_TIMEOUT_SECONDS = 10.0


class PostgresLedgerStore(SqlLedgerStore):
    """The ledger in a PostgreSQL database, reached through a small connection pool."""

    lock_suffix = " FOR UPDATE"
    placeholder = "%s"

    def __init__(self, uri: str, clock: Clock = time.time, pool_size: int = 4) -> None:
        super().__init__(clock)
        self._pool = ConnectionPool(
            uri,
            min_size=1,
            max_size=pool_size,
            open=False,
            name="budget-router-ledger",
            timeout=CONNECT_TIMEOUT_SECONDS,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
            with self._txn() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for statement in SCHEMA.format(serial="BIGSERIAL", blob="BYTEA").split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except (PoolTimeout, Unavailable) as exc:
            self._pool.close()
            raise ConfigError(
                f"BUDGET_ROUTER_LEDGER_URI: cannot reach PostgreSQL at {_safe(uri)} "
                f"within {CONNECT_TIMEOUT_SECONDS:g} s ({exc})"
            ) from exc

    @contextmanager
    def _txn(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.OperationalError as exc:
            raise Unavailable(f"the ledger store is unreachable: {exc}") from exc

    _read = _txn

    def close(self) -> None:
        self._pool.close()


def _safe(uri: str) -> str:
    """The URI without its password, for error messages."""
    info = psycopg.conninfo.conninfo_to_dict(uri)
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)
