"""The embedded ledger store: one SQLite file in WAL mode, owned by one router process.

Every committed transaction is in the WAL file before the call returns. With
``synchronous=NORMAL`` SQLite does not fsync on commit, but the write has reached the
operating system, so a SIGKILL of the router (or any crash of the process) loses nothing;
only a crash of the machine itself can lose the last transactions. ``?synchronous=FULL`` in
the URI fsyncs every commit for that case. Checkpoints (which do fsync) run on a background
thread, off the decision path. A lock file keeps a second process off the same file (replicas
share a PostgreSQL store instead), which is what lets this store keep the books of recent tasks
in a bounded cache: every write goes through it, so it never disagrees with the file.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from router_service.bounded_cache import BoundedCache
from router_service.errors import ConfigError
from router_service.ledger import Clock, TaskBooks
from router_service.ledger_schema import SCHEMA
from router_service.ledger_sql import SqlLedgerStore
from router_service.schemas import Task

CHECKPOINT_SECONDS = 0.25
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file is cut back to after a checkpoint
WAL_RESTART_FRAMES = 4096  # WAL pages in use past which a checkpoint holds writers to restart it
CACHED_BOOKS = 4096
Synchronous = Literal["NORMAL", "FULL"]


class SqliteLedgerStore(SqlLedgerStore):
    """The ledger in ``path`` (``:memory:`` for a throwaway one), one connection, one lock."""

    def __init__(
        self, path: Path | str, clock: Clock = time.time, synchronous: Synchronous = "NORMAL"
    ) -> None:
        super().__init__(clock)
        self._path = str(path)
        self._lock = threading.RLock()
        self._books: BoundedCache[str, TaskBooks] = BoundedCache(CACHED_BOOKS)
        self._lock_file = None
        on_disk = self._path != ":memory:"
        if on_disk:
            self._lock_file = _exclusive(Path(self._path))
        self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(
            SCHEMA.format(serial="INTEGER", blob="BLOB", without_rowid=" WITHOUT ROWID")
        )
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if on_disk:
            self._conn.execute("PRAGMA wal_autocheckpoint=0")  # the thread below does it
            self._conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
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
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._books.clear()  # what was cached in the transaction never happened
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    def _write_one(self, text: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        with self._lock:  # autocommit: the statement is its own transaction
            return self._conn.execute(self._sql(text), params)

    def _books_row(self, conn: Any, task_id: str, lock: bool) -> TaskBooks:
        books = self._books.get(task_id)
        if books is None:
            books = super()._books_row(conn, task_id, lock)
            self._books.put(task_id, books)
        return _copy(books)

    def _write_books(
        self, conn: Any, task_id: str, books: TaskBooks, closed_at: float | None = None
    ) -> None:
        super()._write_books(conn, task_id, books, closed_at)
        self._books.put(task_id, _copy(books))

    def open_task(self, task: Task) -> None:
        self._books.drop(task.task_id)
        super().open_task(task)

    def purge_closed(self, closed_before: float) -> list[str]:
        gone = super().purge_closed(closed_before)
        for task_id in gone:
            self._books.drop(task_id)
        return gone

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database file now and then (the fsyncs happen here).

        The bulk is copied while decisions go on; once the WAL holds many pages, a second pass
        with writers held finishes what they appended meanwhile, so the next write can start
        the WAL afresh. Holding writers only then keeps that pause off most decisions.
        """
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while not self._stop.wait(CHECKPOINT_SECONDS):
                _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames > WAL_RESTART_FRAMES:  # now and then: decisions wait for this one
                    with self._lock:
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


def _copy(books: TaskBooks) -> TaskBooks:
    """A copy the caller may change: a fifth of ``dataclasses.replace``'s cost (it validates
    nothing, the books being valid already)."""
    copied = object.__new__(TaskBooks)
    copied.__dict__.update(books.__dict__)
    copied.committed_by_kind = dict(books.committed_by_kind)
    return copied


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
