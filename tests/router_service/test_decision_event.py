"""The decision event the decider builds (unvalidated, for speed) is one the learner accepts."""

from pathlib import Path

from learner.decoder import EventDecoder
from learner.vw_model import namespace_text
from learner.wire_events import Decision
from router_service.decider import _ActionFeatures, decide, price_candidates
from router_service.events import DecisionEvent, decode_event, encode_event
from router_service.features import model_features
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
        assert set(decoded.model_refs) == set(decoded.model_facts)
        assert all("model" not in a for a in decoded.action_features)
    finally:
        state.close()


def test_the_text_the_router_scores_is_the_text_the_learner_renders(tmp_path: Path) -> None:
    """Train and serve see the same example: the logged features render to the scored text."""
    state = RouterState.build(Settings(data_dir=tmp_path, seed=0))
    try:
        request = DecideRequest.model_validate({"task_id": "t1", "step": step()})
        task = state.open_task(
            TaskCreate(task_id="t1", trust_domain="eng", task_type="coding", budget=budget()),
            tenant="acme",
        )
        with state.ledger.transaction(task.task_id) as txn:
            domain = state.trust.resolve(task.trust_domain)
            candidates = price_candidates(
                request, txn.books, state.catalog.snapshot(), domain, state
            )
        features = _ActionFeatures(state, request.step.type, task.trust_domain)
        scored = {c.model.id: features.text(c) for c in candidates}
        _, event = decide(request, task, state)
        assert event is not None
        learned = EventDecoder().decode(encode_event(event))
        assert isinstance(learned, Decision)
        catalog = state.catalog.snapshot()
        for model_id, logged in zip(learned.actions, learned.action_features, strict=True):
            assert logged["model"] == model_features(catalog[model_id])
            assert namespace_text(logged) == scored[model_id]
    finally:
        state.close()
