"""The promotion gate: a challenger becomes champion only if off-policy evidence says it is better.

The evidence (see :mod:`learner.gate_evidence`) is a replay of the candidate and the champion on
the *same* logged steps: SNIPS estimates of each, and the paired difference candidate minus
champion of reward (``quality - lambda * dollars``) and of quality, each with a delta-method
interval at ``confidence`` (two-sided). Rules (all must hold; each gives one line in
``GateDecision.reasons``):

- samples: at least ``min_steps`` logged steps with outcomes.
- ess: the candidate's effective sample size, and the champion's, at least ``min_ess``; a
  policy the logging policy rarely agreed with has no trustworthy estimate.
- reward: the *lower* bound of the reward gain is at least ``margin``. A lucky point estimate on
  little or skewed data has a wide interval and cannot pass; this is what "enough samples"
  means beyond the count.
- quality: the lower bound of the quality gain is at least ``-quality_tolerance`` (a cheaper
  candidate may not buy its reward with a quality drop larger than the tolerance).
- spend: the candidate's estimated spend per task at most ``max_spend_ratio`` x the mean cap.

Without a champion (the first promotion) the reward and quality rules are skipped and say so:
the sanity gate is samples, ESS, spend, and a bundle that loads and gives a valid pmf on every
logged step (the replay refuses it otherwise).

Whether a passed decision moves the alias is :func:`gate_outcome`: not when the gate is disabled
and not when an operator has pinned the champion. ``maybe_promote`` writes the outcome onto the
model version as tags (``gate.passed``, ``gate.outcome``, ``gate.reasons`` as JSON, ``gate.at``)
whether or not it promotes, so a refusal is on record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from learner.ope import Estimate
    from learner.registry import AliasMove, Pin

GATE_ACTOR = "promotion-gate"


@dataclass(frozen=True)
class GateConfig:
    """Whether the gate may promote on its own, and its thresholds."""

    enabled: bool = True
    quality_tolerance: float = 0.05
    min_ess: float = 100.0
    max_spend_ratio: float = 1.0
    margin: float = 0.01
    min_steps: int = 200
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not (math.isfinite(self.quality_tolerance) and self.quality_tolerance >= 0):
            raise ValueError(f"quality_tolerance must be >= 0, got {self.quality_tolerance}")
        if not (math.isfinite(self.min_ess) and self.min_ess >= 0):
            raise ValueError(f"min_ess must be >= 0, got {self.min_ess}")
        if not (math.isfinite(self.max_spend_ratio) and self.max_spend_ratio > 0):
            raise ValueError(f"max_spend_ratio must be > 0, got {self.max_spend_ratio}")
        if not math.isfinite(self.margin):
            raise ValueError(f"margin must be a finite number, got {self.margin}")
        if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int):
            raise ValueError(f"min_steps must be an integer, got {self.min_steps!r}")
        if self.min_steps < 0:
            raise ValueError(f"min_steps must be >= 0, got {self.min_steps}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

    @property
    def alpha(self) -> float:
        return 1 - self.confidence


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
class Gain:
    """Candidate minus champion on the same logged steps, with its interval."""

    value: float
    ci_low: float
    ci_high: float

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.value, self.ci_low, self.ci_high)):
            raise ValueError(f"Gain must be finite, got {self}")
        if not self.ci_low <= self.value <= self.ci_high:
            raise ValueError(f"Gain needs ci_low <= value <= ci_high, got {self}")


@dataclass(frozen=True)
class GateEvidence:
    """What the gate decides on: the sample, both policies' estimates and the paired gains."""

    n_steps: int
    candidate: PolicyEstimate
    champion: PolicyEstimate | None = None
    reward_gain: Gain | None = None
    quality_gain: Gain | None = None

    def __post_init__(self) -> None:
        if self.champion is not None and (self.reward_gain is None or self.quality_gain is None):
            raise ValueError("GateEvidence against a champion needs reward_gain and quality_gain")


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate passed, with one human-readable line per rule."""

    passed: bool
    reasons: list[str]


class AliasMover(Protocol):
    """The part of the registry the gate needs."""

    def promote(self, version: str, actor: str, reason: str) -> AliasMove: ...

    def tag_version(self, version: str, tags: dict[str, str]) -> None: ...

    def pin(self) -> Pin | None: ...


def _compare(ok: bool, good: str = ">=", bad: str = "<") -> str:
    return good if ok else bad


def evaluate_gate(evidence: GateEvidence, config: GateConfig) -> GateDecision:
    """Apply the samples, ESS, reward, quality and spend rules to ``evidence``."""
    candidate, champion = evidence.candidate, evidence.champion
    checks: list[tuple[bool, str]] = []
    ok = evidence.n_steps >= config.min_steps
    checks.append(
        (ok, f"samples: {evidence.n_steps} logged steps {_compare(ok)} minimum {config.min_steps}")
    )
    ess = candidate.ess if champion is None else min(candidate.ess, champion.ess)
    ok = ess >= config.min_ess
    who = "candidate" if champion is None else "smaller of candidate and champion"
    checks.append((ok, f"ess: {who} {ess:.4g} {_compare(ok)} minimum {config.min_ess:.4g}"))
    level = f"{config.confidence:.0%}"
    if champion is None:
        checks.append((True, "reward: no champion to compare with (first promotion)"))
        checks.append((True, "quality: no champion to compare with (first promotion)"))
    else:
        reward, quality = evidence.reward_gain, evidence.quality_gain
        assert reward is not None and quality is not None  # GateEvidence checks it
        ok = reward.ci_low >= config.margin
        checks.append(
            (
                ok,
                f"reward: gain over champion {reward.value:.4g}, {level} lower bound "
                f"{reward.ci_low:.4g} {_compare(ok)} margin {config.margin:.4g}",
            )
        )
        floor = -config.quality_tolerance
        ok = quality.ci_low >= floor
        checks.append(
            (
                ok,
                f"quality: gain over champion {quality.value:.4g}, {level} lower bound "
                f"{quality.ci_low:.4g} {_compare(ok)} -tolerance {floor:.4g}",
            )
        )
    limit = config.max_spend_ratio * candidate.mean_cap
    ok = candidate.spend_per_task <= limit
    checks.append(
        (
            ok,
            f"spend: {candidate.spend_per_task:.4g} per task {_compare(ok, '<=', '>')} "
            f"{config.max_spend_ratio:.4g} x mean cap {candidate.mean_cap:.4g} = {limit:.4g}",
        )
    )
    reasons = [f"{'pass' if ok else 'FAIL'} {text}" for ok, text in checks]
    return GateDecision(passed=all(ok for ok, _ in checks), reasons=reasons)


def gate_outcome(decision: GateDecision, config: GateConfig, pin: Pin | None) -> str:
    """What the gate does with a decision: ``promoted`` only if it passed, enabled, unpinned."""
    if not decision.passed:
        return "refused"
    if not config.enabled:
        return "passed, gate disabled"
    if pin is not None:
        return f"passed, champion pinned by {pin.actor}"
    return "promoted"


def maybe_promote(
    registry: AliasMover,
    version: str,
    decision: GateDecision,
    config: GateConfig,
    actor: str = GATE_ACTOR,
) -> bool:
    """Promote ``version`` to champion if the gate allows it (see :func:`gate_outcome`);
    record the decision and its outcome on the version either way."""
    outcome = gate_outcome(decision, config, registry.pin())
    registry.tag_version(
        version,
        {
            "gate.passed": str(decision.passed).lower(),
            "gate.outcome": outcome,
            "gate.reasons": json.dumps(decision.reasons),
            "gate.at": datetime.now(UTC).isoformat(),
        },
    )
    if outcome == "promoted":
        registry.promote(version, actor, "gate passed: " + "; ".join(decision.reasons))
    return outcome == "promoted"
