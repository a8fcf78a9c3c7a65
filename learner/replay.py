"""Offline replay: what a candidate policy would have earned and spent on logged decisions.

For each logged step the candidate gives a pmf over the same action list; IPS, SNIPS and DR
(see :mod:`learner.ope`) then estimate its quality, cost and reward ``quality - lam * cost``,
overall, per trust domain and per step kind, beside what the logging policy actually got and,
where every action's outcome is known (benchmarks), the exact counterfactual value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from feature_store.logged import LoggedStep
from learner.ope import (
    Estimate,
    EvaluationError,
    MeanOutcomeModel,
    doubly_robust,
    effective_sample_size,
    ips,
    low_ess_warnings,
    mean_estimate,
    snips,
)
from learner.vw_model import VWPolicyModel

FullInfo = Mapping[str, Mapping[str, tuple[float, float]]]
OUTCOMES = ("quality", "cost", "reward")


class CandidatePolicy(Protocol):
    """A policy to evaluate: its pmf over ``step.actions`` for a logged context."""

    name: str

    def pmf(self, step: LoggedStep) -> list[float]: ...


class FixedModelCandidate:
    """Always the same model (it must be among each step's actions)."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.name = f"always {model_id}"

    def pmf(self, step: LoggedStep) -> list[float]:
        if self.model_id not in step.actions:
            raise EvaluationError(
                f"model {self.model_id!r} is not an action of decision {step.decision_id!r}"
            )
        return [1.0 if action == self.model_id else 0.0 for action in step.actions]


class StepKindRuleCandidate:
    """A model per step kind, e.g. ``{"control": "gpt-4", "execution": "mixtral"}``."""

    def __init__(self, mapping: Mapping[str, str], default: str | None = None) -> None:
        self.mapping = dict(mapping)
        self.default = default
        self.name = "by step kind: " + ", ".join(f"{k}->{m}" for k, m in sorted(mapping.items()))

    def pmf(self, step: LoggedStep) -> list[float]:
        model = self.mapping.get(step.step_kind, self.default)
        if model is None:
            raise EvaluationError(
                f"no model for step kind {step.step_kind!r}; mapping has {sorted(self.mapping)}"
            )
        return FixedModelCandidate(model).pmf(step)


class EpsilonGreedyCandidate:
    """Another exploration setting: the base policy's top action with ``epsilon`` spread evenly."""

    def __init__(self, base: CandidatePolicy, epsilon: float) -> None:
        if not 0 <= epsilon <= 1:
            raise EvaluationError(f"epsilon must be in [0, 1], got {epsilon}")
        self.base = base
        self.epsilon = epsilon
        self.name = f"{base.name} (epsilon {epsilon:g})"

    def pmf(self, step: LoggedStep) -> list[float]:
        base = self.base.pmf(step)
        best = max(range(len(base)), key=base.__getitem__)
        spread = self.epsilon / len(base)
        return [spread + (1 - self.epsilon) * (i == best) for i in range(len(base))]


class VWFileCandidate:
    """A saved VW ``--cb_explore_adf`` model scored on the logged features, exploration included."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise EvaluationError(f"VW model file {path} does not exist")
        self.model = VWPolicyModel.load(path)
        self.name = f"vw:{path.name}"

    def pmf(self, step: LoggedStep) -> list[float]:
        return self.model.predict(step.shared_features, step.action_features)


@dataclass(frozen=True)
class OutcomeReport:
    """One outcome (quality, cost or reward) of the candidate, by every estimator."""

    ips: Estimate
    snips: Estimate
    dr: Estimate
    logged: Estimate
    exact: float | None

    def to_dict(self) -> dict[str, Any]:
        estimates = {k: getattr(self, k).to_dict() for k in ("ips", "snips", "dr", "logged")}
        return {**estimates, "exact": self.exact}


@dataclass(frozen=True)
class SliceReport:
    """Estimates over one slice of the logged decisions (all, one domain or one kind)."""

    name: str
    n: int
    ess: float
    outcomes: dict[str, OutcomeReport]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": self.n,
            "ess": self.ess,
            "outcomes": {k: v.to_dict() for k, v in self.outcomes.items()},
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class ReplayReport:
    """A candidate's replay: overall, per trust domain and per step kind."""

    candidate: str
    lam: float
    overall: SliceReport
    by_domain: dict[str, SliceReport]
    by_kind: dict[str, SliceReport]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "lambda": self.lam,
            "overall": self.overall.to_dict(),
            "by_domain": {k: v.to_dict() for k, v in self.by_domain.items()},
            "by_kind": {k: v.to_dict() for k, v in self.by_kind.items()},
            "warnings": self.warnings,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        """A readable table per slice: estimator, value and interval for each outcome."""
        lines = [f"Replay of {self.candidate} (lambda={self.lam:g}, n={self.overall.n})"]
        lines += [f"WARNING {w}" for w in self.warnings]
        sections = [("Overall", {"all": self.overall}), ("Per trust domain", self.by_domain)]
        for title, slices in [*sections, ("Per step kind", self.by_kind)]:
            lines += ["", f"== {title} =="]
            for part in slices.values():
                lines.append(f"-- {part.name}: n={part.n} ess={part.ess:.1f}")
                lines.append(f"   {'outcome':<8}{'estimator':<10}{'value':>11}  95% interval")
                for outcome, report in part.outcomes.items():
                    for name in ("logged", "ips", "snips", "dr"):
                        est: Estimate = getattr(report, name)
                        lines.append(
                            f"   {outcome:<8}{name:<10}{est.value:>11.5f}  "
                            f"[{est.ci_low:.5f}, {est.ci_high:.5f}]"
                        )
                    if report.exact is not None:
                        lines.append(f"   {outcome:<8}{'exact':<10}{report.exact:>11.5f}")
                lines += [f"   warning: {w}" for w in part.warnings]
        return "\n".join(lines) + "\n"

    def save_chart(self, path: Path) -> Path:
        """Bar chart of quality and cost with intervals: PNG via matplotlib, else SVG by hand."""
        bars = {
            k: [(n, getattr(self.overall.outcomes[k], n)) for n in ("logged", "ips", "snips", "dr")]
            for k in ("quality", "cost")
        }
        exact = {k: self.overall.outcomes[k].exact for k in bars}
        if path.suffix.lower() != ".svg":
            try:
                return _png_chart(bars, exact, self.candidate, path)
            except ImportError:
                path = path.with_suffix(".svg")
        path.write_text(_svg_chart(bars, exact, self.candidate))
        return path


_Bars = dict[str, list[tuple[str, Estimate]]]


def _png_chart(bars: _Bars, exact: dict[str, float | None], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for axis, (outcome, items) in zip(axes, bars.items(), strict=True):
        values = [e.value for _, e in items]
        errors = [[e.value - e.ci_low for _, e in items], [e.ci_high - e.value for _, e in items]]
        axis.bar([n for n, _ in items], values, yerr=errors, capsize=4, color="#4c78a8")
        if exact[outcome] is not None:
            axis.axhline(exact[outcome], color="#e45756", linestyle="--", label="exact")
            axis.legend()
        axis.set_title(outcome)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _svg_chart(bars: _Bars, exact: dict[str, float | None], title: str) -> str:
    width, height, top, bottom = 320, 240, 40, 200
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{height}">',
        f'<text x="10" y="18" font-size="13">{_escape(title)}</text>',
    ]
    for panel, (outcome, items) in enumerate(bars.items()):
        left = panel * width + 30
        finite = [v for _, e in items for v in (e.ci_high, e.value) if math.isfinite(v)]
        scale = max([*finite, exact[outcome] or 0.0, 1e-12])

        def y(value: float, scale: float = scale) -> float:
            value = min(max(value, 0.0), scale) if math.isfinite(value) else 0.0
            return bottom - (bottom - top) * value / scale

        parts.append(f'<text x="{left}" y="{top - 8}" font-size="12">{outcome}</text>')
        for i, (name, est) in enumerate(items):
            x = left + 10 + i * 65
            parts.append(
                f'<rect x="{x}" y="{y(est.value):.1f}" width="40" '
                f'height="{bottom - y(est.value):.1f}" fill="#4c78a8"/>'
                f'<line x1="{x + 20}" x2="{x + 20}" y1="{y(est.ci_low):.1f}" '
                f'y2="{y(est.ci_high):.1f}" stroke="black"/>'
                f'<text x="{x}" y="{bottom + 14}" font-size="11">{name}</text>'
                f'<text x="{x}" y="{bottom + 28}" font-size="9">{est.value:.4g}</text>'
            )
        if exact[outcome] is not None:
            parts.append(
                f'<line x1="{left}" x2="{left + 270}" y1="{y(exact[outcome] or 0):.1f}" '
                f'y2="{y(exact[outcome] or 0):.1f}" stroke="#e45756" stroke-dasharray="4"/>'
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class _Arrays:
    propensity: NDArray[np.float64]
    target: NDArray[np.float64]
    unsupported: NDArray[np.float64]
    observed: dict[str, NDArray[np.float64]]
    direct: dict[str, NDArray[np.float64]]
    predicted: dict[str, NDArray[np.float64]]
    exact: dict[str, NDArray[np.float64]] | None


def _checked_pmf(candidate: CandidatePolicy, step: LoggedStep) -> list[float]:
    pmf = candidate.pmf(step)
    if len(pmf) != len(step.actions):
        raise EvaluationError(
            f"{candidate.name} gave {len(pmf)} probabilities for decision {step.decision_id!r} "
            f"with {len(step.actions)} actions"
        )
    if min(pmf) < 0 or not math.isclose(sum(pmf), 1.0, abs_tol=1e-6):
        raise EvaluationError(
            f"{candidate.name} gave an invalid pmf {pmf} for {step.decision_id!r}"
        )
    return pmf


def _exact(pmf: list[float], step: LoggedStep, full_info: FullInfo) -> tuple[float, float]:
    outcomes = full_info.get(step.decision_id, {})
    missing = [a for a, p in zip(step.actions, pmf, strict=True) if p > 0 and a not in outcomes]
    if missing:
        raise EvaluationError(
            f"full_info for decision {step.decision_id!r} lacks outcomes of {missing}"
        )
    pairs = [(p, outcomes[a]) for a, p in zip(step.actions, pmf, strict=True) if p > 0]
    return sum(p * q for p, (q, _) in pairs), sum(p * c for p, (_, c) in pairs)


def _arrays(
    logged: Sequence[LoggedStep],
    candidate: CandidatePolicy,
    lam: float,
    full_info: FullInfo | None,
    shrinkage: float,
    progress: Callable[[int, int], None] | None,
) -> _Arrays:
    n = len(logged)
    quality = np.array([s.quality for s in logged])
    cost = np.array([s.cost_dollars for s in logged])
    observed = {"quality": quality, "cost": cost, "reward": quality - lam * cost}
    chosen = [s.model for s in logged]
    kinds = [s.step_kind for s in logged]
    models = {
        k: MeanOutcomeModel(shrinkage).fit(chosen, kinds, observed[k]) for k in ("quality", "cost")
    }
    propensity, target, unsupported = np.empty(n), np.empty(n), np.zeros(n)
    direct = {k: np.empty(n) for k in OUTCOMES}
    predicted = {k: np.empty(n) for k in OUTCOMES}
    exact = None if full_info is None else {k: np.empty(n) for k in OUTCOMES}
    every = max(1, n // 100)
    for i, step in enumerate(logged):
        pmf = _checked_pmf(candidate, step)
        propensity[i], target[i] = step.propensity, pmf[step.chosen_index]
        unsupported[i] = sum(p for p, q in zip(pmf, step.pmf, strict=True) if q <= 0)
        for k in ("quality", "cost"):
            rhat = [models[k].predict(a, step.step_kind) for a in step.actions]
            direct[k][i] = float(np.dot(pmf, rhat))
            predicted[k][i] = rhat[step.chosen_index]
        if exact is not None and full_info is not None:
            exact["quality"][i], exact["cost"][i] = _exact(pmf, step, full_info)
        if progress is not None and ((i + 1) % every == 0 or i + 1 == n):
            progress(i + 1, n)
    for values in (direct, predicted, *([exact] if exact is not None else [])):
        values["reward"] = values["quality"] - lam * values["cost"]
    return _Arrays(propensity, target, unsupported, observed, direct, predicted, exact)


def _slice(name: str, arrays: _Arrays, mask: NDArray[np.bool_], alpha: float) -> SliceReport:
    p, t = arrays.propensity[mask], arrays.target[mask]
    weights = t / p
    outcomes = {}
    for k in OUTCOMES:
        y = arrays.observed[k][mask]
        outcomes[k] = OutcomeReport(
            ips=ips(p, t, y, alpha=alpha),
            snips=snips(p, t, y, alpha=alpha),
            dr=doubly_robust(
                p, t, y, arrays.direct[k][mask], arrays.predicted[k][mask], alpha=alpha
            ),
            logged=mean_estimate(y, alpha=alpha),
            exact=None if arrays.exact is None else float(np.mean(arrays.exact[k][mask])),
        )
    warnings = low_ess_warnings(
        weights, label=name, unsupported_mass=float(np.mean(arrays.unsupported[mask]))
    )
    return SliceReport(name, int(mask.sum()), effective_sample_size(weights), outcomes, warnings)


def replay(
    logged: Sequence[LoggedStep],
    candidate: CandidatePolicy,
    lam: float,
    *,
    full_info: FullInfo | None = None,
    alpha: float = 0.05,
    shrinkage: float = 5.0,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Estimate ``candidate``'s quality, cost and reward on ``logged``, overall and by slice.

    ``full_info`` (decision_id -> model -> (quality, cost)) adds the exact counterfactual;
    ``progress(done, total)`` is called about a hundred times while the candidate is scored.
    """
    if not logged:
        raise EvaluationError("replay needs at least one logged step")
    if lam < 0:
        raise EvaluationError(f"lam must be >= 0, got {lam}")
    arrays = _arrays(logged, candidate, lam, full_info, shrinkage, progress)
    domains = np.array([s.trust_domain for s in logged])
    kinds = np.array([s.step_kind for s in logged])
    overall = _slice("all decisions", arrays, np.ones(len(logged), dtype=bool), alpha)
    by_domain = {
        d: _slice(f"domain {d}", arrays, domains == d, alpha) for d in sorted(set(domains))
    }
    by_kind = {k: _slice(f"kind {k}", arrays, kinds == k, alpha) for k in sorted(set(kinds))}
    return ReplayReport(candidate.name, lam, overall, by_domain, by_kind, overall.warnings)
