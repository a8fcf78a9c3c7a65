"""PostgreSQL connections awaited on the event loop, for the statement a decision waits on.

A round trip awaited on the loop costs a socket wait; on a worker thread it also costs a thread
wake-up, a hand-back to the loop and a fight with the loop for the GIL. psycopg's async
connections wait through the loop that uses them, so the connections belong to one loop: a
store used from another loop (a test's next client) opens a new set and drops the old one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg

from router_service.errors import Unavailable


class LoopConnections:
    """At most ``size`` autocommit connections for one event loop, opened when first needed."""

    def __init__(self, uri: str, size: int, connect_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._uri = uri
        self._timeout = connect_timeout
        self._room = size  # connections that may still be opened
        self._idle: asyncio.Queue[psycopg.AsyncConnection | None] = asyncio.Queue()
        self._all: set[psycopg.AsyncConnection] = set()

    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """The first row of one autocommitted statement, if any."""
        conn = await self._acquire()
        try:
            cursor = await conn.execute(sql, params)
            row = await cursor.fetchone()
        except BaseException as exc:
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                self._idle.put_nowait(conn)  # a refused statement: the connection is fine
            else:  # broken, or cancelled with the statement in flight
                self._discard(conn)
            if isinstance(exc, psycopg.OperationalError):
                raise Unavailable(f"the ledger store is unreachable: {exc}") from exc
            raise
        self._idle.put_nowait(conn)
        return None if row is None else tuple(row)

    async def _acquire(self) -> psycopg.AsyncConnection:
        if self._idle.empty() and self._room > 0:
            self._room -= 1
            return await self._open()
        conn = await self._idle.get()
        return await self._open() if conn is None else conn

    async def _open(self) -> psycopg.AsyncConnection:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._uri, autocommit=True, connect_timeout=max(1, round(self._timeout))
            )
        except BaseException as exc:
            self._idle.put_nowait(None)  # the next caller tries to open one again
            if isinstance(exc, psycopg.OperationalError):
                raise Unavailable(f"the ledger store is unreachable: {exc}") from exc
            raise
        self._all.add(conn)
        return conn

    def _discard(self, conn: psycopg.AsyncConnection) -> None:
        self._all.discard(conn)
        conn.pgconn.finish()
        self._idle.put_nowait(None)  # room for a new connection

    def close(self) -> None:
        """Close every connection at once, from any thread (the loop may be gone)."""
        for conn in self._all:
            conn.pgconn.finish()
        self._all.clear()
