"""One routing decision: candidates, exclusions, the policy's draw, and the explanation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from router_service.catalog import Catalog, ModelSpec
from router_service.errors import InvalidRequest
from router_service.features import action_features, shared_features
from router_service.policy import RoutingPolicy
from router_service.schemas import Alternative, DecideRequest, Decision, Task


@dataclass(frozen=True)
class Candidate:
    model: ModelSpec
    estimated_cost: float | None
    excluded_reason: str | None = None


def candidates_for(request: DecideRequest, catalog: Catalog) -> list[Candidate]:
    """Every catalog model with its cost estimate for this step and why it is out, if it is."""
    models = catalog.snapshot()
    if request.candidates is not None:
        unknown = [m for m in request.candidates if m not in models]
        if unknown:
            raise InvalidRequest(
                f"candidates: unknown model ids {unknown}; expected ids from GET /v1/models",
                field="candidates",
                value=unknown,
            )
    step = request.step
    result = []
    for model in models.values():
        cost = model.token_cost(step.input_tokens, step.expected_output_tokens)
        reason = None
        if request.candidates is not None and model.id not in request.candidates:
            reason = "not among the request's candidates"
        elif step.input_tokens + step.expected_output_tokens > model.context_window:
            reason = (
                f"step needs {step.input_tokens + step.expected_output_tokens} tokens, "
                f"context window is {model.context_window}"
            )
        result.append(Candidate(model, cost, reason))
    return result


def decide(request: DecideRequest, task: Task, catalog: Catalog, policy: RoutingPolicy) -> Decision:
    """Score the allowed candidates, sample one, and explain the choice."""
    candidates = candidates_for(request, catalog)
    allowed = [c for c in candidates if c.excluded_reason is None]
    if not allowed:
        raise InvalidRequest(
            "no candidate model can take this step: "
            + "; ".join(f"{c.model.id}: {c.excluded_reason}" for c in candidates),
            field="step",
            value=request.step.model_dump(),
        )
    shared = shared_features(
        request.step,
        request.signals,
        trust_domain=task.trust_domain,
        task_type=task.task_type,
        tags=task.tags,
        context=request.context,
    )
    actions = [action_features(c.model, c.estimated_cost) for c in allowed]
    choice = policy.choose(shared, actions)
    chosen = allowed[choice.index]
    probabilities = {c.model.id: p for c, p in zip(allowed, choice.pmf, strict=True)}
    alternatives = [
        Alternative(
            model=c.model.id,
            probability=probabilities.get(c.model.id, 0.0),
            estimated_cost_dollars=c.estimated_cost,
            excluded=c.excluded_reason is not None,
            excluded_reason=c.excluded_reason,
        )
        for c in candidates
    ]
    alternatives.sort(key=lambda a: (a.excluded, -a.probability))
    return Decision(
        decision_id=f"dec_{uuid.uuid4().hex}",
        task_id=task.task_id,
        model=chosen.model.id,
        propensity=choice.propensity,
        alternatives=alternatives,
        reasons=_reasons(chosen, choice.propensity, max(choice.pmf), len(allowed), policy),
        policy_version=policy.version,
        exploration=policy.describe_exploration(),
        step=request.step,
        budget=task.budget,
        created_at=datetime.now(UTC),
    )


def _reasons(
    chosen: Candidate, propensity: float, top: float, allowed: int, policy: RoutingPolicy
) -> list[str]:
    kind = "policy's top choice" if propensity >= top else "exploration"
    cost = (
        "unpriced (cost from outcomes)"
        if chosen.estimated_cost is None
        else f"estimated ${chosen.estimated_cost:.6f}"
    )
    return [
        f"{chosen.model.id} ({chosen.model.tier} tier, {cost}) picked by {kind} "
        f"with probability {propensity:.3f} among {allowed} allowed models",
        f"policy {policy.version}, {policy.describe_exploration()}",
    ]
