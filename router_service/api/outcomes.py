"""Step outcomes: settle the decision's reservation and book the actual cost."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, status

from router_service.api.tasks import visible_decision
from router_service.auth import PrincipalDep
from router_service.deps import StateDep
from router_service.errors import Conflict
from router_service.events import CostSource, OutcomeEvent
from router_service.ledger import Booked, RemoteLedgerStore, Settlement, exceeds
from router_service.schemas import OutcomeAccepted, OutcomeReport, Task
from router_service.state import RouterState
from router_service.tasks import DecisionRef

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/outcomes", status_code=status.HTTP_202_ACCEPTED)
async def report_outcome(
    state: StateDep, principal: PrincipalDep, body: OutcomeReport
) -> OutcomeAccepted:
    if state.tasks.has_cached(body.decision_id):  # no store read: no hop to a worker thread
        decision, record = visible_decision(state, principal, body.decision_id)
    else:
        decision, record = await state.ledger_bound(
            visible_decision, state, principal, body.decision_id
        )
    return await book_outcome(state, decision, record.task, body)


async def book_outcome(
    state: RouterState, decision: DecisionRef, task: Task, body: OutcomeReport
) -> OutcomeAccepted:
    """Settle the decision's reservation at the outcome's cost and publish the outcome."""
    if decision.model is None or decision.action == "require_confirmation":
        raise Conflict(
            f"decision {body.decision_id!r} chose no model ({decision.action}): "
            "there is no step to report",
            field="decision_id",
            value=body.decision_id,
        )
    output_tokens = body.output_tokens + body.reasoning_tokens
    cost, source = outcome_cost(state, decision, body, output_tokens)
    try:
        settlement = await _settle(state, body.decision_id, cost, body.input_tokens, output_tokens)
    except Conflict:
        # The same outcome again: booked before, but its answer (or its event) may have been
        # lost. Answer it again and send the event again under its fixed id.
        booked = await state.ledger_bound(state.ledger.booked, body.decision_id)
        if not _resent(booked, body, output_tokens):
            raise
        cost = booked.cost_dollars
        ledger = await state.ledger_bound(state.ledger.view, decision.task_id)
    else:
        if source == "reported":
            state.observed_costs.record(
                decision.model, decision.step_type, cost, body.input_tokens, output_tokens
            )
        ledger = settlement.ledger or await state.ledger_bound(state.ledger.view, decision.task_id)
    exceeded = exceeds(cost, output_tokens, decision.reserved_dollars, decision.max_output_tokens)
    await state.publisher.publish_durable_async(
        OutcomeEvent(
            event_id=outcome_event_id(body.decision_id),
            task_id=decision.task_id,
            decision_id=body.decision_id,
            model=decision.model,
            step_kind=decision.step_kind,
            step_type=decision.step_type,
            trust_domain=task.trust_domain,
            success=body.success,
            quality=body.quality,
            input_tokens=body.input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=body.cached_input_tokens,
            cost_dollars=cost,
            cost_source=source,
            latency_ms=body.latency_ms,
            error=body.error,
            exceeded_grant=exceeded,
        )
    )
    state.activity.record_outcome(decision, body, cost, ledger)
    state.metrics.observe_outcome(
        model=decision.model,
        trust_domain=task.trust_domain,
        success=body.success,
        cost_dollars=cost,
    )
    return OutcomeAccepted(
        decision_id=body.decision_id,
        task_id=decision.task_id,
        cost_dollars=cost,
        cost_source=source,
        exceeded_grant=exceeded,
        ledger=ledger,
    )


async def _settle(
    state: RouterState, decision_id: str, cost: float, input_tokens: int, output_tokens: int
) -> Settlement:
    """Book the outcome: a remote store's round trips awaited here, on the event loop."""
    if state.ledger.remote:
        ledger = cast(RemoteLedgerStore, state.ledger)
        return await ledger.settle_on_loop(decision_id, cost, input_tokens, output_tokens)
    return state.ledger.settle(decision_id, cost, input_tokens, output_tokens)


def outcome_event_id(decision_id: str) -> str:
    """Fixed by the decision (it has one outcome), so a resent outcome is a duplicate event."""
    return f"outcome-{decision_id}"


def _resent(booked: Booked | None, body: OutcomeReport, output_tokens: int) -> bool:
    """Whether ``body`` repeats the outcome booked for its decision (not an expiry)."""
    return (
        booked is not None
        and not booked.expired
        and (booked.input_tokens, booked.output_tokens) == (body.input_tokens, output_tokens)
        and body.cost_dollars in (None, booked.cost_dollars)
    )


def outcome_cost(
    state: RouterState, decision: DecisionRef, body: OutcomeReport, output_tokens: int
) -> tuple[float, CostSource]:
    """What to book for an outcome, and from where: the report, the catalog, or estimates."""
    if body.cost_dollars is not None:
        return body.cost_dollars, "reported"
    assert decision.model is not None
    model = state.catalog.snapshot().get(decision.model)
    if model is not None:
        cost = model.token_cost(body.input_tokens, output_tokens, body.cached_input_tokens)
        if cost is not None:
            return cost, "catalog"
        if model.self_hosted_rate is not None:
            return model.self_hosted_rate.cost(body.input_tokens, output_tokens), "self_hosted_rate"
    observed = state.observed_costs.estimate(
        decision.model, decision.step_type, body.input_tokens, output_tokens
    )
    if observed is not None:
        return observed, "observed_estimate"
    return decision.reserved_dollars, "reservation"
