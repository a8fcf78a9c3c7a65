"""A durable local outbox for events: an SQLite file the publisher drains to Kafka in order.

Rows are appended in one transaction per batch (one fsync shared by the whole batch) and read
back oldest first. Once the broker has acknowledged a row it is marked delivered, with the id
of the cluster that took it, and kept for a while: if that cluster is replaced by an empty one
(the memory-only embedded broker restarted) before the learner read the row, it is sent again.
The file survives a restart of the router process, so events the broker never saw are
delivered later.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from router_service.errors import RouterError

__all__ = ["EventSpool", "SpoolError", "SpooledEvent"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    payload BLOB NOT NULL
)
"""
# Added after the first release: spool files written before gain the columns when opened.
_DELIVERY_COLUMNS = {"delivered_to": "TEXT", "delivered_at": "REAL"}
_UNDELIVERED_INDEX = (
    "CREATE INDEX IF NOT EXISTS spool_undelivered ON spool (seq) WHERE delivered_to IS NULL"
)


class SpoolError(RouterError):
    """The spool file cannot be opened, read or written (disk full, permissions, corruption)."""

    status_code = 503
    code = "event_spool_unavailable"
    retriable = True


@dataclass(frozen=True, slots=True)
class SpooledEvent:
    """One row of the spool: its sequence number, Kafka key and encoded payload."""

    seq: int
    key: str
    payload: bytes


class EventSpool:
    """A queue of encoded events in an SQLite file (WAL, fsync on commit): append, read, mark."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: every commit fsyncs the WAL, so an appended batch survives a power loss.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(spool)")}
            for name, kind in _DELIVERY_COLUMNS.items():
                if name not in columns:
                    self._db.execute(f"ALTER TABLE spool ADD COLUMN {name} {kind}")
            self._db.execute(_UNDELIVERED_INDEX)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(
                f"cannot open the event spool at {self.path}: {exc}", field="spool_path"
            ) from exc
        self._closed = False

    def append_many(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        """Append ``(key, payload)`` pairs in one durable transaction; return their seqs.

        The rows of one transaction get consecutive seqs: the write lock is held and
        ``AUTOINCREMENT`` counts up from the largest seq ever used.
        """
        if not items:
            return []
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT INTO spool (key, payload) VALUES (?, ?)", items)
                    (last,) = self._db.execute("SELECT last_insert_rowid()").fetchone()
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot append to the event spool {self.path}: {exc}") from exc
        return list(range(int(last) - len(items) + 1, int(last) + 1))

    def append(self, key: str, payload: bytes) -> int:
        """Append one event durably; return its seq."""
        return self.append_many([(key, payload)])[0]

    def pending(self, limit: int = 500) -> list[SpooledEvent]:
        """The oldest ``limit`` events not yet delivered, in sequence order."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        with self._lock:
            self._check_open()
            try:
                rows = self._db.execute(
                    "SELECT seq, key, payload FROM spool WHERE delivered_to IS NULL "
                    "ORDER BY seq LIMIT ?",
                    (limit,),
                ).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the event spool {self.path}: {exc}") from exc
        return [SpooledEvent(int(seq), str(key), bytes(payload)) for seq, key, payload in rows]

    def mark_delivered(self, through_seq: int, cluster_id: str, now: float) -> int:
        """Mark every pending event up to ``through_seq`` as taken by ``cluster_id`` at ``now``.

        What :meth:`pending` returned is the oldest pending events, so the acknowledged prefix
        of a batch is exactly the pending events up to its last seq. Returns how many.
        """
        return self._write(
            "UPDATE spool SET delivered_to = ?, delivered_at = ? "
            "WHERE delivered_to IS NULL AND seq <= ?",
            (cluster_id, now, int(through_seq)),
            "mark delivered in",
        )

    def redeliver_unless(self, cluster_id: str) -> int:
        """Make events delivered to any other cluster than ``cluster_id`` pending again."""
        return self._write(
            "UPDATE spool SET delivered_to = NULL, delivered_at = NULL "
            "WHERE delivered_to IS NOT NULL AND delivered_to != ?",
            (cluster_id,),
            "requeue in",
        )

    def forget_delivered(self, before: float) -> int:
        """Delete events delivered before ``before``; return how many."""
        return self._write(
            "DELETE FROM spool WHERE delivered_to IS NOT NULL AND delivered_at < ?",
            (before,),
            "prune",
        )

    def _write(self, sql: str, params: tuple[object, ...], what: str) -> int:
        with self._lock:
            self._check_open()
            try:
                return self._db.execute(sql, params).rowcount
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot {what} the event spool {self.path}: {exc}") from exc

    def depth(self) -> int:
        """How many events wait for delivery."""
        with self._lock:
            self._check_open()
            try:
                query = "SELECT COUNT(*) FROM spool WHERE delivered_to IS NULL"
                return int(self._db.execute(query).fetchone()[0])
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the event spool {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the file; later calls raise :class:`SpoolError`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"the event spool {self.path} is closed")

    def __enter__(self) -> EventSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
