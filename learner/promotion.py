"""The promotion gate: a challenger becomes champion only if off-policy evidence says it is safe.

Rules (all must hold; each yields one line in ``GateDecision.reasons``):

- quality: the candidate's *lower* confidence bound must be at least the champion's *point*
  estimate minus ``quality_tolerance``. Using the lower bound makes the gate conservative: a
  candidate with a wide interval (little or skewed data) cannot pass on a lucky point estimate.
  Without a champion (the first promotion) this rule is skipped and says so.
- spend: the candidate's estimated spend per task must be at most ``max_spend_ratio`` times the
  mean per-task cap of the evaluated tasks.
- ESS: the candidate's effective sample size must be at least ``min_ess``.

``maybe_promote`` writes the decision onto the model version as tags (``gate.passed``,
``gate.reasons`` as JSON, ``gate.at``) whether or not it promotes, so a refusal is on record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from learner.ope import Estimate
    from learner.registry import AliasMove

GATE_ACTOR = "promotion-gate"


@dataclass(frozen=True)
class GateConfig:
    """Whether the gate may promote on its own, and its three thresholds."""

    enabled: bool = True
    quality_tolerance: float = 0.0
    min_ess: float = 100.0
    max_spend_ratio: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.quality_tolerance) and self.quality_tolerance >= 0):
            raise ValueError(f"quality_tolerance must be >= 0, got {self.quality_tolerance}")
        if not (math.isfinite(self.min_ess) and self.min_ess >= 0):
            raise ValueError(f"min_ess must be >= 0, got {self.min_ess}")
        if not (math.isfinite(self.max_spend_ratio) and self.max_spend_ratio > 0):
            raise ValueError(f"max_spend_ratio must be > 0, got {self.max_spend_ratio}")


@dataclass(frozen=True)
class PolicyEstimate:
    """Off-policy estimates for one policy: quality with its CI, spend per task, cap, ESS."""

    quality: float
    quality_ci_low: float
    quality_ci_high: float
    spend_per_task: float
    mean_cap: float
    ess: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value):
                raise ValueError(f"PolicyEstimate.{f.name} must be finite, got {value}")
        if not self.quality_ci_low <= self.quality <= self.quality_ci_high:
            raise ValueError(
                "PolicyEstimate needs quality_ci_low <= quality <= quality_ci_high, got "
                f"{self.quality_ci_low} <= {self.quality} <= {self.quality_ci_high}"
            )
        if self.mean_cap <= 0:
            raise ValueError(f"PolicyEstimate.mean_cap must be > 0, got {self.mean_cap}")
        if self.spend_per_task < 0 or self.ess < 0:
            raise ValueError("PolicyEstimate.spend_per_task and .ess must be >= 0")

    @classmethod
    def from_ope(cls, quality: Estimate, spend_per_task: float, mean_cap: float) -> PolicyEstimate:
        """Build from an ``learner.ope.Estimate`` of quality (its ESS is the gate's ESS)."""
        return cls(
            quality=quality.value,
            quality_ci_low=quality.ci_low,
            quality_ci_high=quality.ci_high,
            spend_per_task=spend_per_task,
            mean_cap=mean_cap,
            ess=quality.ess,
        )


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate passed, with one human-readable line per rule."""

    passed: bool
    reasons: list[str]


class AliasMover(Protocol):
    """The part of the registry the gate needs."""

    def promote(self, version: str, actor: str, reason: str) -> AliasMove: ...

    def tag_version(self, version: str, tags: dict[str, str]) -> None: ...


def evaluate_gate(
    candidate: PolicyEstimate, champion: PolicyEstimate | None, config: GateConfig
) -> GateDecision:
    """Apply the quality, spend and ESS rules to ``candidate`` against ``champion``."""
    checks: list[tuple[bool, str]] = []
    if champion is None:
        checks.append((True, "quality: no champion to compare with (first promotion)"))
    else:
        floor = champion.quality - config.quality_tolerance
        ok = candidate.quality_ci_low >= floor
        checks.append(
            (
                ok,
                f"quality: candidate lower bound {candidate.quality_ci_low:.4g} "
                f"{'>=' if ok else '<'} champion {champion.quality:.4g} "
                f"- tolerance {config.quality_tolerance:.4g} = {floor:.4g}",
            )
        )
    limit = config.max_spend_ratio * candidate.mean_cap
    ok = candidate.spend_per_task <= limit
    checks.append(
        (
            ok,
            f"spend: {candidate.spend_per_task:.4g} per task {'<=' if ok else '>'} "
            f"{config.max_spend_ratio:.4g} x mean cap {candidate.mean_cap:.4g} = {limit:.4g}",
        )
    )
    ok = candidate.ess >= config.min_ess
    checks.append(
        (ok, f"ess: {candidate.ess:.4g} {'>=' if ok else '<'} minimum {config.min_ess:.4g}")
    )
    reasons = [f"{'pass' if ok else 'FAIL'} {text}" for ok, text in checks]
    return GateDecision(passed=all(ok for ok, _ in checks), reasons=reasons)


def maybe_promote(
    registry: AliasMover,
    version: str,
    decision: GateDecision,
    config: GateConfig,
    actor: str = GATE_ACTOR,
) -> bool:
    """Promote ``version`` to champion if the gate is enabled and passed; record the decision."""
    promote = config.enabled and decision.passed
    outcome = "promoted" if promote else "passed, gate disabled" if decision.passed else "refused"
    registry.tag_version(
        version,
        {
            "gate.passed": str(decision.passed).lower(),
            "gate.outcome": outcome,
            "gate.reasons": json.dumps(decision.reasons),
            "gate.at": datetime.now(UTC).isoformat(),
        },
    )
    if promote:
        registry.promote(version, actor, "gate passed: " + "; ".join(decision.reasons))
    return promote
