"""Step outcomes: settle the decision's reservation and book the actual cost."""

from __future__ import annotations

from fastapi import APIRouter, status

from router_service.api.tasks import visible_task
from router_service.auth import PrincipalDep
from router_service.deps import StateDep
from router_service.errors import Conflict, InvalidRequest
from router_service.events import OutcomeEvent
from router_service.schemas import OutcomeAccepted, OutcomeReport

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/outcomes", status_code=status.HTTP_202_ACCEPTED)
async def report_outcome(
    state: StateDep, principal: PrincipalDep, body: OutcomeReport
) -> OutcomeAccepted:
    decision = state.tasks.decision(body.decision_id)
    task = visible_task(state, principal, decision.task_id).task
    if decision.model is None or decision.action == "require_confirmation":
        raise Conflict(
            f"decision {body.decision_id!r} chose no model ({decision.action}): "
            "there is no step to report",
            field="decision_id",
            value=body.decision_id,
        )
    output_tokens = body.output_tokens + body.reasoning_tokens
    cost = body.cost_dollars
    if cost is None:
        model = state.catalog.snapshot().get(decision.model)
        cost = (
            None
            if model is None
            else model.token_cost(body.input_tokens, output_tokens, body.cached_input_tokens)
        )
        if cost is None:
            raise InvalidRequest(
                f"cost_dollars is required: model {decision.model!r} has no token prices",
                field="cost_dollars",
                value=None,
            )
    settlement = state.ledger.settle(body.decision_id, cost, body.input_tokens, output_tokens)
    state.observed_costs.record(
        decision.model, decision.step_type, cost, body.input_tokens, output_tokens
    )
    exceeded = output_tokens > decision.max_output_tokens or settlement.exceeded_reservation
    await state.publisher.publish_durable_async(
        OutcomeEvent(
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
            latency_ms=body.latency_ms,
            error=body.error,
            exceeded_grant=exceeded,
        )
    )
    ledger = state.ledger.view(decision.task_id)
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
        exceeded_grant=exceeded,
        ledger=ledger,
    )
