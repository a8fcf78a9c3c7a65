"""Consistent example events (real event classes) for tests, benchmarks and notebooks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from feature_store.batch import AnyStoredEvent
from router_service.events import CorrectionEvent, DecisionEvent, OutcomeEvent, TaskClosedEvent

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
MODELS = ("small-model", "medium-model", "large-model")


def decision_event(
    decision_id: str,
    *,
    task_id: str = "t1",
    chosen_index: int = 0,
    actions: tuple[str, ...] = MODELS,
    at: datetime = EPOCH,
    **overrides: Any,
) -> DecisionEvent:
    """A decision over ``actions`` with a uniform-ish pmf consistent with ``chosen_index``."""
    n = len(actions)
    pmf = [0.1 / (n - 1)] * n if n > 1 else [1.0]
    pmf[chosen_index] = 0.9 if n > 1 else 1.0
    values: dict[str, Any] = {
        "event_id": f"ev-{decision_id}",
        "task_id": task_id,
        "occurred_at": at,
        "decision_id": decision_id,
        "trust_domain": "eng",
        "task_type": "research",
        "step_kind": "control",
        "step_type": "planning",
        "input_tokens": 2_000,
        "expected_output_tokens": 300,
        "granted_max_output_tokens": 600,
        "actions": list(actions),
        "pmf": pmf,
        "chosen_index": chosen_index,
        "model": actions[chosen_index],
        "propensity": pmf[chosen_index],
        "estimated_costs": [0.001 * (i + 1) for i in range(n)],
        "shared_features": {"step": {"kind": "control", "log_in": 0.76}, "task": {"d": "eng"}},
        "action_features": [{"model": {"id": a}, "cost": {"log_cost": -0.5}} for a in actions],
        "policy_version": "v1",
    }
    values.update(overrides)
    return DecisionEvent(**values)


def outcome_event(
    decision: DecisionEvent,
    *,
    success: bool = True,
    cost: float = 0.01,
    latency_ms: float | None = 1_000.0,
    after: timedelta = timedelta(seconds=1),
    **overrides: Any,
) -> OutcomeEvent:
    """The outcome of ``decision``, reported ``after`` it was made."""
    values: dict[str, Any] = {
        "event_id": f"out-{decision.decision_id}",
        "task_id": decision.task_id,
        "occurred_at": decision.occurred_at + after,
        "decision_id": decision.decision_id,
        "model": decision.model,
        "step_kind": decision.step_kind,
        "step_type": decision.step_type,
        "trust_domain": decision.trust_domain,
        "success": success,
        "quality": 0.9 if success else 0.2,
        "input_tokens": decision.input_tokens,
        "output_tokens": 250,
        "cost_dollars": cost,
        "latency_ms": latency_ms,
    }
    values.update(overrides)
    return OutcomeEvent(**values)


def task_closed_event(task_id: str, *, success: bool = True, **overrides: Any) -> TaskClosedEvent:
    """A task close with a fixed budget."""
    values: dict[str, Any] = {
        "event_id": f"close-{task_id}",
        "task_id": task_id,
        "occurred_at": EPOCH + timedelta(hours=1),
        "trust_domain": "eng",
        "success": success,
        "quality": 0.8 if success else 0.1,
        "spent_dollars": 0.1,
        "total_dollars": 1.0,
        "steps": 3,
    }
    values.update(overrides)
    return TaskClosedEvent(**values)


def mixed_events(count: int, *, seed: int = 0, prefix: str = "b") -> list[AnyStoredEvent]:
    """About ``count`` events: decisions, their outcomes, some corrections and task closes."""
    rng = random.Random(seed)
    events: list[AnyStoredEvent] = []
    step = 0
    while len(events) < count:
        task_id = f"{prefix}-task-{step // 5}"
        decision = decision_event(
            f"{prefix}-d{step}",
            task_id=task_id,
            chosen_index=rng.randrange(len(MODELS)),
            at=EPOCH + timedelta(seconds=step),
            step_type=rng.choice(("planning", "extraction", "summarise")),
            trust_domain=rng.choice(("eng", "legal")),
        )
        events.append(decision)
        events.append(outcome_event(decision, success=rng.random() < 0.8, cost=rng.random() / 50))
        if step % 10 == 3:
            events.append(
                CorrectionEvent(
                    event_id=f"{prefix}-corr{step}",
                    task_id=task_id,
                    decision_id=decision.decision_id,
                    rating="down",
                )
            )
        if step % 5 == 4:
            events.append(task_closed_event(task_id, trust_domain=decision.trust_domain))
        step += 1
    return events[:count]
