"""Open tasks and the decisions made for them, kept in memory by the router process."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from router_service.errors import Conflict, NotFound
from router_service.schemas import Decision, Task, TaskCreate


@dataclass
class TaskRecord:
    task: Task
    decisions: list[Decision] = field(default_factory=list)


class TaskStore:
    """Tasks by id with their decisions, and decisions by id for settling outcomes."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskRecord] = {}
        self._decisions: dict[str, Decision] = {}
        self._lock = threading.Lock()

    def open(self, request: TaskCreate, tenant: str) -> Task:
        task_id = request.task_id or f"task_{uuid.uuid4().hex}"
        task = Task(
            task_id=task_id,
            tenant=tenant,
            trust_domain=request.trust_domain,
            task_type=request.task_type,
            budget=request.budget,
            planned_steps=request.planned_steps,
            tags=request.tags,
            status="open",
            created_at=datetime.now(UTC),
        )
        with self._lock:
            if task_id in self._tasks:
                raise Conflict(f"task {task_id!r} already exists", field="task_id", value=task_id)
            self._tasks[task_id] = TaskRecord(task)
        return task

    def get(self, task_id: str) -> TaskRecord:
        record = self._tasks.get(task_id)
        if record is None:
            raise NotFound(f"unknown task {task_id!r}", field="task_id", value=task_id)
        return record

    def add_decision(self, decision: Decision) -> None:
        with self._lock:
            self._tasks[decision.task_id].decisions.append(decision)
            self._decisions[decision.decision_id] = decision

    def decision(self, decision_id: str) -> Decision:
        decision = self._decisions.get(decision_id)
        if decision is None:
            raise NotFound(
                f"unknown decision {decision_id!r}", field="decision_id", value=decision_id
            )
        return decision

    def mark_closed(self, task_id: str) -> Task:
        with self._lock:
            record = self.get(task_id)
            record.task = record.task.model_copy(update={"status": "closed"})
            return record.task
