"""Logged bandit data: one decision joined with its outcome, ready for replay and training."""

from __future__ import annotations

from dataclasses import dataclass

from router_service.events import FeatureNamespaces


@dataclass(frozen=True)
class LoggedStep:
    """A decision (context, actions, pmf, chosen action, propensity) and what it earned."""

    decision_id: str
    task_id: str
    trust_domain: str
    step_kind: str
    step_type: str
    policy_version: str
    actions: list[str]
    pmf: list[float]
    chosen_index: int
    propensity: float
    shared_features: FeatureNamespaces
    action_features: list[FeatureNamespaces]
    estimated_costs: list[float | None]
    success: bool
    quality: float
    cost_dollars: float
    task_success: bool | None = None

    @property
    def model(self) -> str:
        return self.actions[self.chosen_index]
