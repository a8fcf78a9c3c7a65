"""The learner's garbage-collection policy: collect between polls, never inside a batch.

A batch's decoded events stay alive until they are learned and stored, so the collector's
automatic runs during a batch walked the same events again and again: a third of the
learner's CPU in process. Between polls little is alive, so a collection there is cheap.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator

# The young generations are collected after every poll; all of them after so many polls.
FULL_COLLECTION_EVERY_POLLS = 50


_lock = threading.Lock()
_holders = 0
_automatic = True


@contextlib.contextmanager
def collect_between_polls() -> Iterator[Callable[[], None]]:
    """Freeze start-up objects and stop automatic collection; yields the call to make after
    each poll. The last of several learners in one process to leave restores the collector."""
    global _holders, _automatic
    with _lock:
        if _holders == 0:
            gc.collect()
            gc.freeze()
            _automatic = gc.isenabled()
            gc.disable()
        _holders += 1
    polls = 0

    def after_poll() -> None:
        nonlocal polls
        polls += 1
        gc.collect(2 if polls % FULL_COLLECTION_EVERY_POLLS == 0 else 1)

    try:
        yield after_poll
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                gc.unfreeze()
                if _automatic:
                    gc.enable()
