"""The embedded ledger store: one SQLite file in WAL mode, owned by one router process.

Every committed transaction is in the WAL file before the call returns. With
``synchronous=NORMAL`` SQLite does not fsync on commit, but the write has reached the
operating system, so a SIGKILL of the router (or any crash of the process) loses nothing;
only a crash of the machine itself can lose the last transactions. ``?synchronous=FULL`` in
the URI fsyncs every commit for that case. Checkpoints (which do fsync) run on a background
thread, off the decision path. A lock file keeps a second process off the same file: replicas
share a PostgreSQL store instead.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from router_service.errors import ConfigError
from router_service.ledger import Clock
from router_service.ledger_sql import SCHEMA, SqlLedgerStore

CHECKPOINT_SECONDS = 1.0
Synchronous = Literal["NORMAL", "FULL"]


class SqliteLedgerStore(SqlLedgerStore):
    """The ledger in ``path`` (``:memory:`` for a throwaway one), one connection, one lock."""

    def __init__(
        self, path: Path | str, clock: Clock = time.time, synchronous: Synchronous = "NORMAL"
    ) -> None:
        super().__init__(clock)
        self._path = str(path)
        self._lock = threading.RLock()
        self._lock_file = None
        on_disk = self._path != ":memory:"
        if on_disk:
            self._lock_file = _exclusive(Path(self._path))
        self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(SCHEMA.format(serial="INTEGER", blob="BLOB"))
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if on_disk:
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="ledger-checkpoint", daemon=True
            )
            self._checkpointer.start()

    @contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database file now and then (the fsyncs happen here)."""
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while not self._stop.wait(CHECKPOINT_SECONDS):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            self._conn.close()
        if self._lock_file is not None:
            self._lock_file.close()


def _exclusive(path: Path):  # type: ignore[no-untyped-def]
    """Hold ``<path>.lock`` for the life of the store; a second process fails fast."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = (path.parent / f"{path.name}.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"BUDGET_ROUTER_LEDGER_URI: {path} is in use by another router process; "
            "several replicas need a shared store (postgresql://...)"
        ) from None
    return handle
