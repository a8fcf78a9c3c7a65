"""Catalog facts by content id: a decision event names each candidate's ``model`` namespace.

A candidate's catalog facts (id, tier, provider, capabilities) are the same at every step, and
they were most of a decision event's bytes and of the learner's decoding. A decision event
refers to them by content id (``model_refs``) and carries them (``model_facts``) only in the
first decision of its task, through this router, to refer to that id. A task's events share a
partition, in order, so the facts always come before their first use there. A router that
lost track (restarted, another replica, a task past :data:`TRACKED_TASKS`) carries them again.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping

import orjson

from router_service.bounded_cache import BoundedCache
from router_service.events import DecisionEvent, FeatureValue

TRACKED_TASKS = 4096  # tasks whose carried facts this router remembers


def facts_id(facts: Mapping[str, FeatureValue]) -> str:
    """The content id of one candidate's catalog facts: 64 bits of BLAKE2b, in hex."""
    canonical = orjson.dumps(facts, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=8).hexdigest()


class SentFacts:
    """Which facts each task's decision events already carried, so later ones only refer."""

    def __init__(self, tracked_tasks: int = TRACKED_TASKS) -> None:
        self._lock = threading.Lock()
        self._sent: BoundedCache[str, set[str]] = BoundedCache(tracked_tasks)

    def publish(self, event: DecisionEvent, publish: Callable[[DecisionEvent], None]) -> None:
        """Publish ``event`` without the facts its task carried before.

        Under one lock with the publication, so a task's events leave in the order the
        facts they carry were claimed.
        """
        with self._lock:
            sent = self._sent.get(event.task_id)
            if sent is None:
                sent = set()
                self._sent.put(event.task_id, sent)
            facts = event.model_facts
            if not sent.isdisjoint(facts):
                new = {ref: f for ref, f in facts.items() if ref not in sent}
                event = event.model_copy(update={"model_facts": new})
            sent.update(facts)
            publish(event)

    def forget(self, task_id: str) -> None:
        """A closed task: its decisions are over."""
        self._sent.drop(task_id)
