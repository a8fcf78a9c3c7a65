"""Feature-store writes on a thread of their own, so the store works while the learner learns.

DuckDB releases the GIL while it inserts and commits, so on a second core a batch is written
while the next one is decoded, joined and learned. The learner hands each batch over and goes
on; :meth:`BackgroundWriter.flush` waits until every batch handed over is committed and raises
what a write raised. The learner flushes before each checkpoint, so a checkpoint never counts
an event the store lacks: after a crash the events past it are read again and written again,
and the store ignores the copies (its writes are idempotent by ``event_id``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any, Protocol

MAX_PENDING_BATCHES = 2
"""Batches handed over and not yet written (each holds its decoded events, megabytes); a
slower store makes the learner wait here."""


class FeatureStore(Protocol):
    """What the learner needs of the feature store: idempotent (by event_id) event writes."""

    def write_events(self, events: Sequence[Any]) -> object: ...


class BackgroundWriter:
    """Writes batches to ``store`` in order, one at a time, on a daemon thread."""

    def __init__(self, store: FeatureStore, max_pending: int = MAX_PENDING_BATCHES) -> None:
        self._store = store
        self._batches: queue.Queue[Sequence[Any] | None] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="feature-store-writer")
        self._thread.daemon = True
        self._thread.start()

    def write_events(self, events: Sequence[Any]) -> None:
        """Hand ``events`` over (waits while ``max_pending`` batches are); raises an earlier
        write's error."""
        self._raise_failure()
        self._batches.put(events)

    def flush(self) -> None:
        """Wait until every batch handed over is written; raise the first write's error."""
        self._batches.join()
        self._raise_failure()

    def close(self) -> None:
        """Write what was handed over, then stop the thread (the store stays open)."""
        if self._thread.is_alive():
            self._batches.put(None)
            self._thread.join()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            events = self._batches.get()
            try:
                if events is None:
                    return
                if self._error is None:  # after a failure nothing more is written
                    self._store.write_events(events)
            except BaseException as exc:  # handed to the learner's thread by flush
                self._error = exc
            finally:
                self._batches.task_done()
