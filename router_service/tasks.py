"""Open tasks and the decisions made for them, kept in memory by the router process.

Decisions are kept as their JSON bytes plus a small tuple of what settling an outcome needs:
neither is traversed by Python's garbage collector, which keeps collection pauses short however
many decisions the process holds.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from router_service.errors import Conflict, NotFound
from router_service.schemas import Decision, Task, TaskCreate
from router_service.served import ServedDecision


class DecisionRef(NamedTuple):
    """What an outcome for a decision needs to know about it."""

    decision_id: str
    task_id: str
    model: str | None
    action: str
    step_kind: str
    step_type: str
    max_output_tokens: int
    reserved_dollars: float


@dataclass
class TaskRecord:
    task: Task
    decision_bodies: list[bytes] = field(default_factory=list)
    step_decisions: list[str] = field(default_factory=list)
    decision_ids: list[str] = field(default_factory=list)
    closed_at: float | None = None

    def decisions(self) -> list[Decision]:
        return [Decision.model_validate_json(body) for body in self.decision_bodies]


class TaskStore:
    """Tasks by id with their decisions, and decisions by id for settling outcomes."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskRecord] = {}
        self._decisions: dict[str, DecisionRef] = {}
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

    def add_decision(self, decision: ServedDecision) -> None:
        """Keep a decision and its JSON."""
        ref = DecisionRef(
            decision.decision_id,
            decision.task_id,
            decision.model,
            decision.action,
            decision.step_kind,
            decision.step_type,
            decision.max_output_tokens,
            decision.reserved_dollars,
        )
        with self._lock:
            record = self._tasks[decision.task_id]
            record.decision_bodies.append(decision.json)
            record.decision_ids.append(decision.decision_id)
            if decision.is_step:
                record.step_decisions.append(decision.decision_id)
            self._decisions[decision.decision_id] = ref

    def decision(self, decision_id: str) -> DecisionRef:
        decision = self._decisions.get(decision_id)
        if decision is None:
            raise NotFound(
                f"unknown decision {decision_id!r}", field="decision_id", value=decision_id
            )
        return decision

    def mark_closed(self, task_id: str, now: float) -> Task:
        with self._lock:
            record = self.get(task_id)
            record.task = record.task.model_copy(update={"status": "closed"})
            record.closed_at = now
            return record.task

    def forget_closed(self, closed_before: float) -> list[str]:
        """Drop tasks closed before ``closed_before`` (and their decisions); their ids."""
        with self._lock:
            gone = [
                task_id
                for task_id, record in self._tasks.items()
                if record.closed_at is not None and record.closed_at < closed_before
            ]
            for task_id in gone:
                for decision_id in self._tasks.pop(task_id).decision_ids:
                    self._decisions.pop(decision_id, None)
        return gone
