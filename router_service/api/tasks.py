"""Tasks: open one, read it back with its ledger and decisions, close it."""

from __future__ import annotations

from fastapi import APIRouter, status

from router_service.auth import PrincipalDep, assert_domain_allowed, assert_task_visible
from router_service.deps import StateDep
from router_service.errors import Conflict, NotFound
from router_service.events import TaskClosedEvent
from router_service.ledger_memory import unknown_decision
from router_service.schemas import CloseRequest, LedgerView, Task, TaskCreate, TaskWithDecisions
from router_service.state import RouterState
from router_service.tasks import DecisionRef, TaskRecord

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


def visible_task(
    state: RouterState, principal: PrincipalDep, task_id: str, fresh: bool = False
) -> TaskRecord:
    """The task if the caller's tenant owns it; an unknown task otherwise.

    ``fresh`` reads the store rather than the cache (another replica may have closed it).
    """
    record = state.tasks.fresh(task_id) if fresh else state.tasks.get(task_id)
    assert_task_visible(principal, record.task.tenant, task_id)
    return record


def visible_decision(
    state: RouterState, principal: PrincipalDep, decision_id: str
) -> tuple[DecisionRef, TaskRecord]:
    """The decision and its task if the caller's tenant owns them; an unknown decision otherwise.

    Worded the same for another tenant's decision and one whose task was purged, so neither the
    other task's id nor its existence is told.
    """
    decision = state.tasks.decision(decision_id)
    try:
        return decision, visible_task(state, principal, decision.task_id)
    except NotFound:
        raise unknown_decision(decision_id) from None


@router.post("", status_code=status.HTTP_201_CREATED)
async def open_task(state: StateDep, principal: PrincipalDep, body: TaskCreate) -> Task:
    assert_domain_allowed(principal, body.trust_domain)
    return await state.ledger_bound(_open, state, body, principal.tenant)


def _open(state: RouterState, body: TaskCreate, tenant: str) -> Task:
    task = state.open_task(body, tenant)
    return task.model_copy(update={"ledger": state.ledger.view(task.task_id)})


@router.get("/{task_id}")
async def get_task(state: StateDep, principal: PrincipalDep, task_id: str) -> TaskWithDecisions:
    return await state.ledger_bound(_with_decisions, state, principal, task_id)


def _with_decisions(state: RouterState, principal: PrincipalDep, task_id: str) -> TaskWithDecisions:
    record = visible_task(state, principal, task_id, fresh=True)
    return TaskWithDecisions(
        **record.task.model_dump(exclude={"ledger"}),
        ledger=state.ledger.view(task_id),
        decisions=record.decisions(),
    )


@router.post("/{task_id}/close")
async def close_task(
    state: StateDep, principal: PrincipalDep, task_id: str, body: CloseRequest
) -> Task:
    """End the task; it refuses new decisions, in-flight outcomes still settle.

    Closing a closed task is a 409, and sends its task-closed event again under its fixed id:
    the first close may have been booked while its event was lost with the answer.
    """
    record = await state.ledger_bound(visible_task, state, principal, task_id)
    try:
        ledger = await state.ledger_bound(state.ledger.close_task, task_id)
    except Conflict:
        view = await state.ledger_bound(state.ledger.view, task_id)
        await state.publisher.publish_durable_async(closed_event(record, view, body))
        raise
    task = await state.ledger_bound(state.tasks.mark_closed, task_id)
    state.sent_facts.forget(task_id)
    await state.publisher.publish_durable_async(closed_event(record, ledger, body))
    state.activity.record_close(task, ledger)
    return task.model_copy(update={"ledger": ledger})


def closed_event(record: TaskRecord, ledger: LedgerView, body: CloseRequest) -> TaskClosedEvent:
    """The task-closed event, with an id fixed by the task (a task closes once)."""
    task = record.task
    return TaskClosedEvent(
        event_id=f"closed-{task.task_id}-{task.created_at.timestamp():.6f}",
        task_id=task.task_id,
        trust_domain=task.trust_domain,
        success=body.success,
        quality=body.quality,
        spent_dollars=ledger.spent_dollars + ledger.reserved_dollars,
        total_dollars=task.budget.total_dollars,
        steps=ledger.steps,
        decision_ids=list(record.step_decisions),
    )
