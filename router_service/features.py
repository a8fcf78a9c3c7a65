"""Routing features: what VW sees of a step (shared) and of each candidate model (action)."""

from __future__ import annotations

import math

from learner.vw_model import Namespaces
from router_service.catalog import ModelSpec
from router_service.schemas import Signals, Step


def shared_features(
    step: Step,
    signals: Signals,
    *,
    trust_domain: str,
    task_type: str,
    tags: dict[str, str],
    context: dict[str, float | str],
) -> dict[str, dict[str, float | str | bool]]:
    """Features of the step, the task and its state, shared by every candidate."""
    confidence = 0.5 if signals.prior_confidence is None else signals.prior_confidence
    return {
        "step": {
            "kind": step.kind,
            "type": step.type.lower(),
            "optional": step.optional,
            "log_in": math.log1p(step.input_tokens) / 10,
            "log_out": math.log1p(step.expected_output_tokens) / 10,
        },
        "task": {
            "domain": trust_domain,
            "task_type": task_type,
            **{f"tag_{key}": value for key, value in tags.items()},
        },
        "signals": {
            "retries": min(signals.retries, 10) / 10,
            "low_confidence": 1.0 - confidence,
            "malformed": min(signals.malformed_tool_args, 5) / 5,
            "loop": signals.loop_detected,
            "self_corrections": min(signals.self_corrections, 5) / 5,
            "context_pressure": signals.context_pressure,
        },
        "context": dict(context),
    }


def action_features(model: ModelSpec, estimated_cost: float | None) -> Namespaces:
    """Features of one candidate model, including its estimated cost for this step."""
    features: dict[str, float | str | bool] = {
        "id": model.id,
        "tier": model.tier,
        "provider": model.provider,
        "self_hosted": model.self_hosted,
    }
    for tag in model.tags:
        features[f"can_{tag}"] = True
    if estimated_cost is None:
        cost: dict[str, float | str | bool] = {"unpriced": True}
    else:
        cost = {"log_cost": math.log10(estimated_cost + 1e-6) / 6}
    return {"model": features, "cost": cost}
