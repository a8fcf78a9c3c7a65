"""Open tasks and the decisions made for them, kept in memory by the router process."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from router_service.errors import Conflict, NotFound
from router_service.schemas import Decision, Task, TaskCreate, TaskWithDecisions


@dataclass
class TaskRecord:
    task: Task
    decisions: list[Decision] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class TaskStore:
    """Tasks by id with their decisions; each task has its own lock for its ledger."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskRecord] = {}
        self._lock = threading.Lock()

    def open(self, request: TaskCreate) -> Task:
        task_id = request.task_id or f"task_{uuid.uuid4().hex}"
        task = Task(
            task_id=task_id,
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

    def view(self, task_id: str) -> TaskWithDecisions:
        record = self.get(task_id)
        with record.lock:
            return TaskWithDecisions(**record.task.model_dump(), decisions=list(record.decisions))
