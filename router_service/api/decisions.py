"""The per-step decision endpoint."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from fastapi import APIRouter, Response

from router_service.api.tasks import visible_task
from router_service.auth import PrincipalDep
from router_service.decider import decide
from router_service.deps import StateDep
from router_service.errors import Conflict
from router_service.events import DecisionEvent
from router_service.ledger import RemoteLedgerStore
from router_service.schemas import DecideRequest, Decision, Task
from router_service.served import ServedDecision
from router_service.state import RouterState

router = APIRouter(prefix="/v1", tags=["decisions"])
log = logging.getLogger("budget_router.decisions")
DRAFT_TRIES = 2  # decisions against unlocked books before one holds the lock


@router.post("/decide", response_model=Decision)
async def decide_step(state: StateDep, principal: PrincipalDep, body: DecideRequest) -> Response:
    started = time.perf_counter()
    record = visible_task(state, principal, body.task_id)
    if record.task.status != "open":
        raise Conflict(f"task {body.task_id!r} is closed", field="task_id", value=body.task_id)
    decision = await serve_decision(state, body, record.task, started)
    return Response(decision.json, media_type="application/json")  # serialised once, in decide


async def serve_decision(
    state: RouterState, body: DecideRequest, task: Task, started: float
) -> ServedDecision:
    """Decide a step for an open task, record and publish it; ``started`` is perf_counter.

    On a store across the network only the round trips leave the event loop: the books are
    read (unless the store knows them from its last commit for the task), the decision is made
    here, and the draft is committed if the books did not change meanwhile; a lost commit
    returns the books as they are. After :data:`DRAFT_TRIES` lost races (or with overdue
    reservations to expire) the decision is made holding the task's lock, on a worker thread.
    """
    if not state.ledger.remote:
        return make_decision(state, body, task, started)
    ledger = cast(RemoteLedgerStore, state.ledger)
    for _ in range(DRAFT_TRIES):
        draft = ledger.known_draft(task.task_id) or await asyncio.to_thread(
            ledger.draft, task.task_id
        )
        if draft is None:
            break
        decision, event = decide(body, task, state, draft)
        if await draft.commit_on_loop():
            return announce(state, task, decision, event, started)
    return await asyncio.to_thread(make_decision, state, body, task, started)


def make_decision(
    state: RouterState, body: DecideRequest, task: Task, started: float
) -> ServedDecision:
    """Decide a step holding the task's lock (the ledger records it), publish it."""
    decision, event = decide(body, task, state)
    return announce(state, task, decision, event, started)


def announce(
    state: RouterState,
    task: Task,
    decision: ServedDecision,
    event: DecisionEvent | None,
    started: float,
) -> ServedDecision:
    """What follows a recorded decision: the task cache, the event, activity, metrics, log."""
    state.tasks.remember(decision)
    if event is not None:
        state.sent_facts.publish(event, state.publisher.publish)
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
