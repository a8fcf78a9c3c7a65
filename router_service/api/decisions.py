"""The per-step decision endpoint."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Response

from router_service.api.tasks import visible_task
from router_service.auth import PrincipalDep
from router_service.decider import decide
from router_service.deps import StateDep
from router_service.errors import Conflict
from router_service.schemas import DecideRequest, Decision, Task
from router_service.served import ServedDecision
from router_service.state import RouterState

router = APIRouter(prefix="/v1", tags=["decisions"])
log = logging.getLogger("budget_router.decisions")


@router.post("/decide", response_model=Decision)
async def decide_step(state: StateDep, principal: PrincipalDep, body: DecideRequest) -> Response:
    started = time.perf_counter()
    record = visible_task(state, principal, body.task_id)
    if record.task.status != "open":
        raise Conflict(f"task {body.task_id!r} is closed", field="task_id", value=body.task_id)
    decision = await state.ledger_bound(make_decision, state, body, record.task, started)
    return Response(decision.json, media_type="application/json")  # serialised once, in decide


def make_decision(
    state: RouterState, body: DecideRequest, task: Task, started: float
) -> ServedDecision:
    """Decide a step for an open task (the ledger records it), publish it; ``started`` is
    perf_counter."""
    decision, event = decide(body, task, state)
    state.tasks.remember(decision)
    if event is not None:
        state.publisher.publish(event)
    state.activity.record(decision, task)
    state.metrics.observe(decision, time.perf_counter() - started)
    log.info(
        "decision",
        extra={
            "decision_id": decision.decision_id,
            "task_id": decision.task_id,
            "model": decision.model,
            "action": decision.action,
            "propensity": decision.propensity,
        },
    )
    return decision
