"""Human corrections: a preferred model or a thumbs up/down, learned from by the learner."""

from __future__ import annotations

from fastapi import APIRouter, status

from router_service.api.tasks import visible_task
from router_service.auth import PrincipalDep
from router_service.deps import StateDep
from router_service.events import CorrectionEvent
from router_service.schemas import CorrectionAccepted, CorrectionRequest

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/corrections", status_code=status.HTTP_202_ACCEPTED)
async def correct(
    state: StateDep, principal: PrincipalDep, body: CorrectionRequest
) -> CorrectionAccepted:
    """Answered once the correction is durably accepted (spooled or acked by the broker)."""
    if body.decision_id is not None:
        task_id = state.tasks.decision(body.decision_id).task_id
    else:
        assert body.task_id is not None
        task_id = body.task_id
    visible_task(state, principal, task_id)
    if body.preferred_model is not None:
        state.catalog.get(body.preferred_model)
    event = CorrectionEvent(
        task_id=task_id,
        decision_id=body.decision_id,
        preferred_model=body.preferred_model,
        rating=body.rating,
        note=body.note,
    )
    await state.publisher.publish_durable_async(event)
    return CorrectionAccepted(
        event_id=event.event_id, task_id=task_id, decision_id=body.decision_id
    )
