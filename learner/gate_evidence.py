"""The promotion gate's evidence: candidate and champion replayed on the same logged steps.

Both policies are scored on every logged step; SNIPS estimates each one's quality, cost and
reward (the replay reports), and the *paired* gain candidate minus champion comes with a
delta-method interval. Pairing matters: the two estimates share the logged outcomes, so their
difference is far less noisy than two independent intervals suggest.

For SNIPS ``V = sum(w y) / sum(w)`` the influence of step ``i`` is ``w_i (y_i - V) / mean(w)``;
the gain's influence is the candidate's minus the champion's, and its variance is the sample
variance of that over ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from feature_store.logged import LoggedStep
from learner.promotion import Gain, GateEvidence, PolicyEstimate
from learner.replay import CandidatePolicy, ReplayReport, replay

Progress = Callable[[int, int], None]


class RememberingCandidate:
    """A candidate that keeps each step's probability of the logged action as replay scores it."""

    def __init__(self, policy: CandidatePolicy) -> None:
        self.policy = policy
        self.name = policy.name
        self.logged_action_probs: list[float] = []

    def pmf(self, step: LoggedStep) -> list[float]:
        pmf = self.policy.pmf(step)
        self.logged_action_probs.append(pmf[step.chosen_index])
        return pmf


def paired_gain(
    propensities: NDArray[np.float64],
    candidate_probs: NDArray[np.float64],
    champion_probs: NDArray[np.float64],
    outcomes: NDArray[np.float64],
    alpha: float,
) -> Gain | None:
    """SNIPS(candidate) - SNIPS(champion) of ``outcomes`` with its paired interval; None when
    either policy never agrees with a logged action (no estimate)."""
    influences, values = [], []
    for probs in (candidate_probs, champion_probs):
        w = probs / propensities
        if float(np.sum(w)) <= 0:
            return None
        value = float(np.sum(w * outcomes) / np.sum(w))
        values.append(value)
        influences.append(w * (outcomes - value) / float(np.mean(w)))
    n = outcomes.size
    diff = influences[0] - influences[1]
    spread = float(np.sqrt(np.sum(diff * diff) / (n * max(n - 1, 1))))
    half = float(stats.norm.ppf(1 - alpha / 2)) * spread if n > 1 else math.inf
    if not math.isfinite(half):
        return None
    gain = values[0] - values[1]
    return Gain(gain, gain - half, gain + half)


@dataclass(frozen=True)
class Replays:
    """The replay reports of the candidate and the champion, and the gate's evidence."""

    candidate: ReplayReport
    champion: ReplayReport | None
    evidence: GateEvidence | None


def policy_estimate(
    report: ReplayReport, steps_per_task: float, mean_cap: float
) -> PolicyEstimate | None:
    """The gate's view of a replay (SNIPS quality and spend); None when it has no estimate."""
    quality, cost = report.overall.outcomes["quality"].snips, report.overall.outcomes["cost"].snips
    if not all(math.isfinite(v) for v in (quality.value, quality.ci_low, cost.value)):
        return None
    return PolicyEstimate.from_ope(quality, max(0.0, cost.value) * steps_per_task, mean_cap)


def gather_evidence(
    steps: Sequence[LoggedStep],
    candidate: CandidatePolicy,
    champion: CandidatePolicy | None,
    lam: float,
    *,
    steps_per_task: float,
    mean_cap: float,
    alpha: float,
    progress: Progress | None = None,
) -> Replays:
    """Replay both policies on ``steps`` and pair them; ``evidence`` is None if either has no
    estimate (it never agrees with a logged action)."""
    ours = RememberingCandidate(candidate)
    report = replay(steps, ours, lam, alpha=alpha, progress=progress)
    estimate = policy_estimate(report, steps_per_task, mean_cap)
    if champion is None:
        evidence = None if estimate is None else GateEvidence(len(steps), estimate)
        return Replays(report, None, evidence)
    theirs = RememberingCandidate(champion)
    champion_report = replay(steps, theirs, lam, alpha=alpha)
    baseline = policy_estimate(champion_report, steps_per_task, mean_cap)
    p = np.array([s.propensity for s in steps])
    quality = np.array([s.quality for s in steps])
    reward = quality - lam * np.array([s.cost_dollars for s in steps])
    mine, other = np.array(ours.logged_action_probs), np.array(theirs.logged_action_probs)
    gains = [paired_gain(p, mine, other, y, alpha) for y in (reward, quality)]
    if estimate is None or baseline is None or gains[0] is None or gains[1] is None:
        return Replays(report, champion_report, None)
    evidence = GateEvidence(len(steps), estimate, baseline, gains[0], gains[1])
    return Replays(report, champion_report, evidence)
