"""Human corrections: a preferred model or a thumbs up/down, learned from by the learner."""

from __future__ import annotations

import hashlib
import json

from fastapi import APIRouter, status

from router_service.api.tasks import visible_decision, visible_task
from router_service.auth import PrincipalDep
from router_service.deps import StateDep
from router_service.errors import InvalidRequest, NotFound
from router_service.events import CorrectionEvent
from router_service.schemas import CorrectionAccepted, CorrectionRequest

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/corrections", status_code=status.HTTP_202_ACCEPTED)
async def correct(
    state: StateDep, principal: PrincipalDep, body: CorrectionRequest
) -> CorrectionAccepted:
    """Answered once the correction is durably accepted (spooled or acked by the broker).

    The same correction sent again gets the same event id, so the learner learns it once.
    """
    if body.decision_id is not None:
        task_id = visible_decision(state, principal, body.decision_id)[0].task_id
    else:
        assert body.task_id is not None
        task_id = visible_task(state, principal, body.task_id).task.task_id
    if body.preferred_model is not None:
        try:
            state.catalog.get(body.preferred_model)
        except NotFound as exc:
            raise InvalidRequest(
                f"preferred_model: unknown model {body.preferred_model!r}; "
                "expected an id from GET /v1/models",
                field="preferred_model",
                value=body.preferred_model,
            ) from exc
    event = CorrectionEvent(
        event_id=correction_event_id(task_id, body),
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


def correction_event_id(task_id: str, body: CorrectionRequest) -> str:
    """An id fixed by what the correction says, so a resent one is a duplicate event."""
    verdict = [task_id, body.decision_id, body.preferred_model, body.rating, body.note]
    return hashlib.sha256(json.dumps(verdict).encode()).hexdigest()[:32]
