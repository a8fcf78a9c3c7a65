"""The decision event the decider builds (unvalidated, for speed) is one the learner accepts."""

from pathlib import Path

from router_service.decider import decide
from router_service.events import DecisionEvent, decode_event, encode_event
from router_service.schemas import DecideRequest, TaskCreate
from router_service.settings import Settings
from router_service.state import RouterState
from tests.conftest import budget, step


def test_decision_event_round_trips_through_the_learners_decoder(tmp_path: Path) -> None:
    state = RouterState.build(Settings(data_dir=tmp_path, seed=0))
    try:
        task = state.open_task(
            TaskCreate(task_id="t1", trust_domain="eng", task_type="coding", budget=budget()),
            tenant="acme",
        )
        request = DecideRequest.model_validate(
            {"task_id": "t1", "step": step(), "prompt": "Extract the totals from this invoice"}
        )
        decision, event = decide(request, task, state)
        assert isinstance(event, DecisionEvent)
        decoded = decode_event(encode_event(event))
        assert decoded == DecisionEvent.model_validate(event.model_dump())
        assert decoded.decision_id == decision.decision_id
        assert decoded.actions[decoded.chosen_index] == decision.model
        assert abs(sum(decoded.pmf) - 1) < 1e-9
    finally:
        state.close()
