"""Tasks and the decisions made for them, kept in the ledger store, with small caches in front.

The store holds the history (tasks, decision refs, decision JSON), so the router's memory does
not grow with the decisions it has made. Tasks' metadata and decision refs never change once
written, so bounded caches of the most recent ones spare the store a read on the hot path; a
task's status is re-checked by the store whenever its books change.

Only open tasks are cached, and for less than half the time closed tasks are kept before they
are purged. A task id can be opened again (by any tenant) once its task is purged; another
replica's cached copy of the old task is older than that by then, so it is read afresh.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from router_service.bounded_cache import BoundedCache
from router_service.ledger import DecisionRef, LedgerStore
from router_service.schemas import Decision, Task, TaskCreate
from router_service.served import ServedDecision, unpack

__all__ = ["DecisionRef", "TaskRecord", "TaskStore"]
CACHED_TASKS = 4096
CACHED_DECISIONS = 16384


class TaskRecord:
    """A task and the way to its decisions."""

    def __init__(self, task: Task, store: LedgerStore) -> None:
        self.task = task
        self._store = store

    def decisions(self) -> list[Decision]:
        packed = self._store.packed_decisions(self.task.task_id)
        return [Decision.model_validate_json(unpack(p)) for p in packed]

    @property
    def step_decisions(self) -> list[str]:
        """Decisions that chose a model for a step (what the task's result is credited to)."""
        return self._store.step_decision_ids(self.task.task_id)


class TaskStore:
    """Tasks by id with their decisions, and decisions by id for settling outcomes."""

    def __init__(
        self,
        store: LedgerStore,
        max_age_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._max_age = max_age_seconds
        self._clock = clock
        self._tasks: BoundedCache[str, tuple[Task, float]] = BoundedCache(CACHED_TASKS)
        self._decisions: BoundedCache[str, DecisionRef] = BoundedCache(CACHED_DECISIONS)

    def open(self, request: TaskCreate, tenant: str) -> Task:
        task = Task(
            task_id=request.task_id or f"task_{uuid.uuid4().hex}",
            tenant=tenant,
            trust_domain=request.trust_domain,
            task_type=request.task_type,
            budget=request.budget,
            planned_steps=request.planned_steps,
            tags=request.tags,
            status="open",
            created_at=datetime.now(UTC),
        )
        self._store.open_task(task)
        self._cache(task)
        return task

    def get(self, task_id: str) -> TaskRecord:
        """The task (its status as last seen here; the store re-checks it when it matters)."""
        cached = self._tasks.get(task_id)
        if cached is not None and self._clock() - cached[1] < self._max_age:
            return TaskRecord(cached[0], self._store)
        return self.fresh(task_id)

    def fresh(self, task_id: str) -> TaskRecord:
        """The task as the store has it now (another replica may have closed it)."""
        task = self._store.task(task_id)
        self._cache(task)
        return TaskRecord(task, self._store)

    def _cache(self, task: Task) -> None:
        if task.status == "open":
            self._tasks.put(task.task_id, (task, self._clock()))
        else:
            self._tasks.drop(task.task_id)

    def remember(self, decision: ServedDecision) -> None:
        """Cache a decision the ledger store has just recorded (outcomes look it up next)."""
        self._decisions.put(decision.decision_id, decision.ref())

    def has_cached(self, decision_id: str) -> bool:
        """Whether the decision and its open task are both cached: reading them needs no I/O."""
        ref = self._decisions.get(decision_id)
        if ref is None:
            return False
        cached = self._tasks.get(ref.task_id)
        return cached is not None and self._clock() - cached[1] < self._max_age

    def decision(self, decision_id: str) -> DecisionRef:
        ref = self._decisions.get(decision_id)
        if ref is None:
            ref = self._store.decision(decision_id)
            self._decisions.put(decision_id, ref)
        return ref

    def mark_closed(self, task_id: str) -> Task:
        task = self._store.task(task_id)
        self._cache(task)
        return task

    def forget(self, task_id: str) -> None:
        """Drop a purged task from the cache (its decision refs age out on their own)."""
        self._tasks.drop(task_id)
