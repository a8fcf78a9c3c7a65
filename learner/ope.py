"""Off-policy estimators (IPS, SNIPS, doubly robust) over logged propensities, with intervals.

Every estimator takes plain arrays, one entry per logged decision: the logging policy's
probability of the logged action (``propensities``), the target policy's probability of that
same action (``target_probs``) and the observed outcome. The outcome may be quality, cost or
the shaped reward ``quality - lambda * cost``: the estimators are linear in it, so the same
code estimates what a candidate would earn and what it would spend.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

FloatArray = NDArray[np.float64]


class EvaluationError(ValueError):
    """Root error of off-policy evaluation, replay and benchmark data; never worth a retry."""

    retriable: ClassVar[bool] = False


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its (1 - alpha) interval, sample size and effective sample size."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    ess: float

    def contains(self, truth: float) -> bool:
        """Whether ``truth`` lies inside the interval (bounds included)."""
        return self.ci_low <= truth <= self.ci_high

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain JSON-ready values; NaN (an undefined estimate) becomes None."""
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def _as_array(name: str, values: ArrayLike, n: int | None = None) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if n is not None and array.size != n:
        raise EvaluationError(f"{name} has {array.size} entries, expected {n}")
    if not np.all(np.isfinite(array)):
        raise EvaluationError(f"{name} must be finite numbers")
    return array


def importance_weights(propensities: ArrayLike, target_probs: ArrayLike) -> FloatArray:
    """``target / logging`` probability of each logged action; propensities must be in (0, 1]."""
    logging = _as_array("propensities", propensities)
    target = _as_array("target_probs", target_probs, logging.size)
    if np.any(logging <= 0) or np.any(logging > 1):
        raise EvaluationError("propensities must be in (0, 1]")
    if np.any(target < 0) or np.any(target > 1 + 1e-9):
        raise EvaluationError("target_probs must be in [0, 1]")
    return target / logging


def effective_sample_size(weights: ArrayLike) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``; 0 when every weight is 0."""
    w = _as_array("weights", weights)
    squares = float(np.sum(w * w))
    return 0.0 if squares == 0 else float(np.sum(w)) ** 2 / squares


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise EvaluationError(f"alpha must be in (0, 1), got {alpha}")
    return float(stats.norm.ppf(1 - alpha / 2))


def mean_estimate(terms: ArrayLike, *, alpha: float = 0.05, ess: float | None = None) -> Estimate:
    """The mean of per-sample terms with a normal interval from their sample variance."""
    x = _as_array("terms", terms)
    n = x.size
    if n == 0:
        raise EvaluationError("cannot estimate from 0 samples")
    value = float(np.mean(x))
    half = _z(alpha) * float(np.std(x, ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    return Estimate(value, value - half, value + half, n, float(n) if ess is None else ess)


def ips(
    propensities: ArrayLike, target_probs: ArrayLike, outcomes: ArrayLike, *, alpha: float = 0.05
) -> Estimate:
    """Inverse propensity scoring: the mean of ``w * outcome``; unbiased under full support."""
    w = importance_weights(propensities, target_probs)
    y = _as_array("outcomes", outcomes, w.size)
    return mean_estimate(w * y, alpha=alpha, ess=effective_sample_size(w))


def snips(
    propensities: ArrayLike,
    target_probs: ArrayLike,
    outcomes: ArrayLike,
    *,
    alpha: float = 0.05,
    bootstrap: int = 0,
    seed: int = 0,
) -> Estimate:
    """Self-normalised IPS ``sum(w y) / sum(w)``; delta-method interval, or a seeded bootstrap."""
    w = importance_weights(propensities, target_probs)
    y = _as_array("outcomes", outcomes, w.size)
    n, total, ess = w.size, float(np.sum(w)), effective_sample_size(w)
    if total == 0:
        return Estimate(math.nan, math.nan, math.nan, n, 0.0)
    value = float(np.sum(w * y)) / total
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, n, size=(bootstrap, n))
        sums = np.sum(w[draws], axis=1)
        valid = sums > 0
        values = np.sum(w[draws] * y[draws], axis=1)[valid] / sums[valid]
        low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
        return Estimate(value, float(low), float(high), n, ess)
    # Delta method: Var ~ sum(w^2 (y - v)^2) / (sum w)^2, with the n / (n - 1) correction.
    variance = float(np.sum(w * w * (y - value) ** 2)) / total**2 * n / max(n - 1, 1)
    half = _z(alpha) * math.sqrt(variance)
    return Estimate(value, value - half, value + half, n, ess)


def doubly_robust(
    propensities: ArrayLike,
    target_probs: ArrayLike,
    outcomes: ArrayLike,
    direct: ArrayLike,
    predicted: ArrayLike,
    *,
    alpha: float = 0.05,
) -> Estimate:
    """Doubly robust: ``direct + w * (outcome - predicted)`` per sample.

    ``direct`` is the reward model's value of the target pmf at each context
    (``sum_a pi(a|x) rhat(x, a)``, see :func:`direct_values`) and ``predicted`` its prediction
    for the logged action. Passing them per sample allows a different action list per decision.
    """
    w = importance_weights(propensities, target_probs)
    y = _as_array("outcomes", outcomes, w.size)
    dm = _as_array("direct", direct, w.size)
    rhat = _as_array("predicted", predicted, w.size)
    return mean_estimate(dm + w * (y - rhat), alpha=alpha, ess=effective_sample_size(w))


def direct_values(target_pmf: ArrayLike, predictions: ArrayLike) -> FloatArray:
    """Row-wise ``sum_a pi(a|x) rhat(x, a)`` for rectangular (n, actions) arrays."""
    pmf = np.asarray(target_pmf, dtype=np.float64)
    rhat = np.asarray(predictions, dtype=np.float64)
    if pmf.shape != rhat.shape or pmf.ndim != 2:
        raise EvaluationError(f"target_pmf {pmf.shape} and predictions {rhat.shape} must match")
    return np.sum(pmf * rhat, axis=1)


class MeanOutcomeModel:
    """Reward model for DR: the mean outcome per (action, group), shrunk towards the action mean.

    ``rhat(a, g) = (sum_{a,g} y + k * mean_a) / (n_{a,g} + k)``, and the action mean is shrunk
    the same way towards the global mean, so rare cells borrow strength and unseen ones fall
    back gracefully. ``k`` (``shrinkage``) is a pseudo-count. Groups are usually step kinds.
    """

    def __init__(self, shrinkage: float = 5.0) -> None:
        if shrinkage < 0:
            raise EvaluationError(f"shrinkage must be >= 0, got {shrinkage}")
        self.shrinkage = shrinkage
        self._global = 0.0
        self._action: dict[str, float] = {}
        self._cell: dict[tuple[str, str], float] = {}

    def fit(
        self, actions: Sequence[str], groups: Sequence[str], outcomes: ArrayLike
    ) -> MeanOutcomeModel:
        """Fit on the logged (action, group, outcome) triples; returns self."""
        y = _as_array("outcomes", outcomes, len(actions))
        if len(groups) != y.size:
            raise EvaluationError(f"groups has {len(groups)} entries, expected {y.size}")
        if y.size == 0:
            raise EvaluationError("cannot fit a reward model on 0 samples")
        self._global = float(np.mean(y))
        by_action: dict[str, list[float]] = defaultdict(list)
        by_cell: dict[tuple[str, str], list[float]] = defaultdict(list)
        for action, group, value in zip(actions, groups, y, strict=True):
            by_action[action].append(value)
            by_cell[(action, group)].append(value)
        k = self.shrinkage
        self._action = {a: (sum(v) + k * self._global) / (len(v) + k) for a, v in by_action.items()}
        self._cell = {
            c: (sum(v) + k * self._action[c[0]]) / (len(v) + k) for c, v in by_cell.items()
        }
        return self

    def predict(self, action: str, group: str) -> float:
        """The shrunk mean for (action, group), else the action's, else the global mean."""
        cell = self._cell.get((action, group))
        if cell is not None:
            return cell
        return self._action.get(action, self._global)


def low_ess_warnings(
    weights: ArrayLike,
    *,
    label: str = "candidate",
    min_ess: float = 100.0,
    min_ess_ratio: float = 0.02,
    max_weight_share: float = 0.05,
    unsupported_mass: float = 0.0,
) -> list[str]:
    """Human-readable reasons not to trust an importance-weighted estimate (empty if none).

    Fires when the effective sample size is below ``min_ess`` or below ``min_ess_ratio * n``,
    when one sample carries more than ``max_weight_share`` of the total weight, or when the
    target puts mass (``unsupported_mass``, averaged over decisions) on actions the logging
    policy could not choose, which biases every importance-weighted estimate.
    """
    w = _as_array("weights", weights)
    n, ess, total = w.size, effective_sample_size(w), float(np.sum(w))
    found: list[str] = []
    if total == 0:
        return [f"{label}: never agrees with a logged action in {n} decisions; no estimate"]
    if ess < min_ess or ess < min_ess_ratio * n:
        found.append(
            f"{label}: effective sample size {ess:.1f} of {n} decisions ({ess / n:.1%}) is "
            f"below {min_ess:g} or {min_ess_ratio:.0%}; the logging policy rarely chose "
            "what this policy would"
        )
    share = float(np.max(w)) / total
    if share > max_weight_share:
        found.append(
            f"{label}: one decision carries {share:.1%} of the importance weight "
            f"(max weight {float(np.max(w)):.1f}); estimates hinge on a few samples"
        )
    if unsupported_mass > 1e-9:
        found.append(
            f"{label}: {unsupported_mass:.1%} of its probability is on actions the logging "
            "policy never plays; importance-weighted estimates are biased"
        )
    return found
