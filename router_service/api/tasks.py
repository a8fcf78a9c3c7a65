"""Tasks: open one, read it back with its ledger and decisions, close it."""

from __future__ import annotations

from fastapi import APIRouter, status

from router_service.deps import StateDep
from router_service.events import TaskClosedEvent
from router_service.schemas import CloseRequest, Task, TaskCreate, TaskWithDecisions

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def open_task(state: StateDep, body: TaskCreate) -> Task:
    task = state.open_task(body)
    return task.model_copy(update={"ledger": state.ledger.view(task.task_id)})


@router.get("/{task_id}")
async def get_task(state: StateDep, task_id: str) -> TaskWithDecisions:
    record = state.tasks.get(task_id)
    return TaskWithDecisions(
        **record.task.model_dump(exclude={"ledger"}),
        ledger=state.ledger.view(task_id),
        decisions=list(record.decisions),
    )


@router.post("/{task_id}/close")
async def close_task(state: StateDep, task_id: str, body: CloseRequest) -> Task:
    """End the task; it refuses new decisions, in-flight outcomes still settle."""
    record = state.tasks.get(task_id)
    ledger = state.ledger.close(task_id)
    task = state.tasks.mark_closed(task_id)
    await state.publisher.publish_durable_async(
        TaskClosedEvent(
            task_id=task_id,
            trust_domain=task.trust_domain,
            success=body.success,
            quality=body.quality,
            spent_dollars=ledger.spent_dollars + ledger.reserved_dollars,
            total_dollars=task.budget.total_dollars,
            steps=ledger.steps,
            decision_ids=[d.decision_id for d in record.decisions if d.reserved_dollars > 0],
        )
    )
    return task.model_copy(update={"ledger": ledger})
