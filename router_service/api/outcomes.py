"""Step outcomes: settle the decision's reservation and book the actual cost."""

from __future__ import annotations

from fastapi import APIRouter, status

from router_service.deps import StateDep
from router_service.errors import Conflict, InvalidRequest
from router_service.schemas import OutcomeAccepted, OutcomeReport

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/outcomes", status_code=status.HTTP_202_ACCEPTED)
async def report_outcome(state: StateDep, body: OutcomeReport) -> OutcomeAccepted:
    decision = state.tasks.decision(body.decision_id)
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
    state.ledger.settle(body.decision_id, cost, body.input_tokens, output_tokens)
    state.observed_costs.record(decision.model, decision.step.type, cost)
    return OutcomeAccepted(
        decision_id=body.decision_id,
        task_id=decision.task_id,
        cost_dollars=cost,
        exceeded_grant=output_tokens > decision.max_output_tokens,
        ledger=state.ledger.view(decision.task_id),
    )
