"""Tasks and the decisions made for them, kept in the ledger store, with small caches in front.

The store holds the history (tasks, decision refs, decision JSON), so the router's memory does
not grow with the decisions it has made. Tasks' metadata and decision refs never change once
written, so bounded caches of the most recent ones spare the store a read on the hot path; a
task's status is re-checked by the store whenever its books change.
"""

from __future__ import annotations

import uuid
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

    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self._tasks: BoundedCache[str, Task] = BoundedCache(CACHED_TASKS)
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
        self._tasks.put(task.task_id, task)
        return task

    def get(self, task_id: str) -> TaskRecord:
        """The task (its status as last seen here; the store re-checks it when it matters)."""
        task = self._tasks.get(task_id)
        if task is None:
            task = self._store.task(task_id)
            self._tasks.put(task_id, task)
        return TaskRecord(task, self._store)

    def fresh(self, task_id: str) -> TaskRecord:
        """The task as the store has it now (another replica may have closed it)."""
        task = self._store.task(task_id)
        self._tasks.put(task_id, task)
        return TaskRecord(task, self._store)

    def remember(self, decision: ServedDecision) -> None:
        """Cache a decision the ledger store has just recorded (outcomes look it up next)."""
        self._decisions.put(decision.decision_id, decision.ref())

    def decision(self, decision_id: str) -> DecisionRef:
        ref = self._decisions.get(decision_id)
        if ref is None:
            ref = self._store.decision(decision_id)
            self._decisions.put(decision_id, ref)
        return ref

    def mark_closed(self, task_id: str) -> Task:
        task = self._store.task(task_id)
        self._tasks.put(task_id, task)
        return task

    def forget(self, task_id: str) -> None:
        """Drop a purged task from the cache (its decision refs age out on their own)."""
        self._tasks.drop(task_id)
