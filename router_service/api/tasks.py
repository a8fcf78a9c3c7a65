"""Tasks: open one, read it back with its decisions."""

from __future__ import annotations

from fastapi import APIRouter, status

from router_service.deps import StateDep
from router_service.schemas import Task, TaskCreate, TaskWithDecisions

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def open_task(state: StateDep, body: TaskCreate) -> Task:
    return state.tasks.open(body)


@router.get("/{task_id}")
async def get_task(state: StateDep, task_id: str) -> TaskWithDecisions:
    return state.tasks.view(task_id)
