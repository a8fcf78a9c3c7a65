"""Day-one policy: a VW model warm-started from per-step-kind tier preferences.

Without a trained model the router should still be sensible (strong models for control steps,
cheap ones for presentation). We fit the same VW model the learner later updates on synthetic,
fully labelled examples whose reward falls with the distance from the preferred tier and, a
little, with cost, so the prior is a real VW policy rather than a special case in the code.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from learner.vw_model import ExplorationSpec, VWPolicyModel
from router_service.catalog import ModelSpec
from router_service.features import action_features, shared_features
from router_service.schemas import Signals, Step
from router_service.settings import TIERS, Tier

PRIOR_STEP_TYPES: dict[str, tuple[str, ...]] = {
    "control": ("planning", "decomposition", "delegation", "branching"),
    "execution": ("extraction", "transformation", "drafting", "classification", "tool_selection"),
    "verification": ("self_check", "policy_check", "tool_argument_validation"),
    "presentation": ("summarize", "format", "translate"),
    "final_synthesis": ("final_synthesis",),
    "handoff": ("handoff",),
}
TIER_DISTANCE_PENALTY = 0.3
COST_PENALTY = 0.05


def prior_reward(model: ModelSpec, preferred: Tier, cost_rank: float) -> float:
    """Reward of ``model`` under the prior: 1 at the preferred tier, less further away."""
    distance = abs(model.tier_rank - TIERS.index(preferred))
    return 1.0 - TIER_DISTANCE_PENALTY * distance - COST_PENALTY * cost_rank


def train_prior(
    models: list[ModelSpec],
    tier_preferences: Mapping[str, Tier],
    exploration: ExplorationSpec,
    *,
    examples_per_kind: int,
    seed: int,
) -> VWPolicyModel:
    """A fresh VW model fitted to the tier preferences on seeded synthetic steps."""
    rng = random.Random(seed)
    model = VWPolicyModel.create(exploration, seed)
    for _ in range(examples_per_kind):
        for kind, preferred in tier_preferences.items():
            step = Step(
                kind=kind,  # type: ignore[arg-type]
                type=rng.choice(PRIOR_STEP_TYPES.get(kind, (kind,))),
                input_tokens=int(math.exp(rng.uniform(math.log(200), math.log(50_000)))),
                expected_output_tokens=int(math.exp(rng.uniform(math.log(50), math.log(4_000)))),
            )
            shared = shared_features(
                step, Signals(), trust_domain="default", task_type="any", tags={}, context={}
            )
            costs = [m.token_cost(step.input_tokens, step.expected_output_tokens) for m in models]
            ranks = _cost_ranks(costs)
            actions = [action_features(m, c) for m, c in zip(models, costs, strict=True)]
            for index, candidate in enumerate(models):
                reward = prior_reward(candidate, preferred, ranks[index])
                model.learn(shared, actions, index, -reward, 1.0)
    return model


def _cost_ranks(costs: list[float | None]) -> list[float]:
    """Each cost's position between the cheapest (0) and dearest (1); unpriced count as mid."""
    known = sorted(c for c in costs if c is not None)
    if len(known) < 2:
        return [0.5] * len(costs)
    low, high = math.log(known[0] + 1e-9), math.log(known[-1] + 1e-9)
    span = (high - low) or 1.0
    return [0.5 if c is None else (math.log(c + 1e-9) - low) / span for c in costs]
