"""Budget-constrained allocator: a price on spend per trust domain, adapted primal-dual style.

The learner maximises quality subject to "expected spend per task <= target x the task's cap".
Its Lagrangian gives each step the reward ``quality - lambda * cost / total_dollars``
(:mod:`learner.reward`); the dual variable ``lambda`` of a trust domain follows projected
subgradient steps, one per closed task of that domain::

    lambda <- max(0, lambda + step * (spent_dollars / total_dollars - target))

Tasks that overspend the target raise the price of money, so the policy learns cheaper routes;
tasks that stay under it lower the price down to 0, where only quality counts. A domain may
have its own target (``targets``: a domain that should spend 2% of each budget on average gets
0.02), else the common one applies. The state is a JSON-able dict the router loads next to
the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STATE_VERSION = 1


class BudgetAllocator:
    """Per-trust-domain budget prices (dual variables) updated from closed tasks."""

    def __init__(
        self,
        initial: float,
        step: float,
        target: float,
        targets: Mapping[str, float] | None = None,
    ) -> None:
        if initial < 0 or step < 0 or not 0 < target <= 1:
            raise ValueError(
                f"allocator: expected lambda_initial >= 0, lambda_step >= 0 and "
                f"0 < spend_target_ratio <= 1, got {initial}, {step}, {target}"
            )
        bad = {d: t for d, t in (targets or {}).items() if not 0 < t <= 1}
        if bad:
            raise ValueError(f"allocator: domain targets must be in (0, 1], got {bad}")
        self.initial = initial
        self.step = step
        self.target = target
        self.targets = dict(targets or {})
        self._domains: dict[str, dict[str, float]] = {}

    def target_of(self, domain: str) -> float:
        """The spend share of each task's budget that ``domain`` aims at."""
        return self.targets.get(domain, self.target)

    def price(self, domain: str) -> float:
        """The current lambda of ``domain`` (the initial one until a task of it closes)."""
        state = self._domains.get(domain)
        return self.initial if state is None else state["lambda"]

    def observe_task(self, domain: str, spent_dollars: float, total_dollars: float) -> float:
        """One dual step from a closed task; returns the domain's new lambda."""
        if total_dollars <= 0:
            raise ValueError(f"total_dollars must be > 0, got {total_dollars}")
        ratio = spent_dollars / total_dollars
        state = self._domains.setdefault(
            domain, {"lambda": self.initial, "tasks": 0, "mean_spend_ratio": 0.0}
        )
        state["lambda"] = max(0.0, state["lambda"] + self.step * (ratio - self.target_of(domain)))
        state["tasks"] += 1
        state["mean_spend_ratio"] += (ratio - state["mean_spend_ratio"]) / state["tasks"]
        return state["lambda"]

    def lambdas(self) -> dict[str, float]:
        return {domain: state["lambda"] for domain, state in sorted(self._domains.items())}

    def to_state(self) -> dict[str, Any]:
        """JSON-able state: parameters and, per domain, lambda, tasks seen, mean spend ratio."""
        return {
            "version": STATE_VERSION,
            "lambda_initial": self.initial,
            "lambda_step": self.step,
            "spend_target_ratio": self.target,
            "domain_targets": dict(sorted(self.targets.items())),
            "domains": {domain: dict(state) for domain, state in sorted(self._domains.items())},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BudgetAllocator:
        """Rebuild an allocator from :meth:`to_state` output."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"allocator state version: expected {STATE_VERSION}, got {state.get('version')}"
            )
        allocator = cls(
            state["lambda_initial"],
            state["lambda_step"],
            state["spend_target_ratio"],
            state.get("domain_targets"),
        )
        allocator._domains = {d: dict(s) for d, s in state["domains"].items()}
        return allocator
