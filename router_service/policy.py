"""The routing policy: VW's exploration pmf over the allowed candidates, sampled with a seed."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from learner.vw_model import ExplorationSpec, Namespaces, VWPolicyModel
from router_service.catalog import ModelSpec
from router_service.prior import train_prior
from router_service.settings import Settings


@dataclass(frozen=True)
class Choice:
    """The sampled action, the pmf it was drawn from, and its probability (the propensity)."""

    index: int
    pmf: list[float]

    @property
    def propensity(self) -> float:
        return self.pmf[self.index]


@dataclass(frozen=True)
class Preference:
    """The model's pmf over actions and its score of each (an estimated cost: lower is better)."""

    pmf: list[float]
    scores: list[float]


class RoutingPolicy:
    """Scores candidates with a VW model and samples one; safe to call from many threads."""

    def __init__(
        self, model: VWPolicyModel, version: str, exploration: ExplorationSpec, seed: int
    ) -> None:
        self.model = model
        self.version = version
        self.exploration = exploration
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def describe_exploration(self) -> str:
        spec = self.exploration
        if spec.algorithm == "softmax":
            return f"softmax(lambda={spec.softmax_lambda:g})"
        if spec.algorithm == "squarecb":
            return f"squarecb(gamma_scale={spec.squarecb_gamma_scale:g})"
        return f"epsilon-greedy(epsilon={spec.epsilon:g})"

    def pmf(self, shared: Namespaces, actions: Sequence[Namespaces]) -> list[float]:
        """The model's exploration pmf over ``actions``."""
        with self._lock:
            return self.model.predict(shared, actions)

    def pmf_text(self, shared: str, actions: Sequence[str]) -> list[float]:
        """``pmf`` on features already rendered as VW text (see ``namespace_text``)."""
        with self._lock:
            return self.model.predict_text(shared, actions)

    def preference_text(self, shared: str, actions: Sequence[str]) -> Preference:
        """The pmf and the scores of actions rendered as VW text."""
        with self._lock:
            return Preference(*self.model.score_text(shared, actions))

    def pmf_within(self, preference: Preference, indices: Sequence[int]) -> list[float] | None:
        """The pmf the model would give the actions at ``indices`` alone, from their scores.

        Epsilon-greedy spreads epsilon evenly and gives the rest to the best score (shared on
        a tie), so this is VW's own answer without a second prediction. Epsilon is read off
        the pmf itself (what the model was built with, whatever the settings say). None when
        the pmf does not have that shape, or for the other exploration algorithms: those need
        a prediction of their own.
        """
        if self.exploration.algorithm != "epsilon":
            return None
        pmf, scores = preference.pmf, preference.scores
        top = min(scores)
        floor = {p for p, s in zip(pmf, scores, strict=True) if s != top}
        if len(floor) > 1:
            return None
        epsilon = floor.pop() * len(pmf) if floor else 0.0  # all tied: epsilon does not matter
        within = [scores[i] for i in indices]
        best = min(within)
        ties = within.count(best)
        spread = epsilon / len(within)
        return [spread + ((1 - epsilon) / ties if s == best else 0.0) for s in within]

    def sample(self, pmf: list[float], max_exploration: float = 1.0) -> Choice:
        """Draw from ``pmf`` after capping the mass off its top action at ``max_exploration``."""
        capped = cap_exploration(pmf, max_exploration)
        with self._lock:
            draw = self._rng.random()
        cumulative = 0.0
        for index, probability in enumerate(capped):
            cumulative += probability
            if draw < cumulative and probability > 0:
                return Choice(index, capped)
        return Choice(max(range(len(capped)), key=capped.__getitem__), capped)

    def choose(
        self, shared: Namespaces, actions: Sequence[Namespaces], max_exploration: float = 1.0
    ) -> Choice:
        """Draw one action from the model's exploration pmf."""
        return self.sample(self.pmf(shared, actions), max_exploration)


def cap_exploration(pmf: list[float], max_exploration: float) -> list[float]:
    """Mix ``pmf`` towards its top action so at most ``max_exploration`` lies elsewhere."""
    top = max(range(len(pmf)), key=pmf.__getitem__)
    explored = 1.0 - pmf[top]
    if explored <= max_exploration:
        return pmf
    keep = max_exploration / explored
    capped = [p * keep for p in pmf]
    capped[top] += 1.0 - keep
    return capped


def exploration_spec(settings: Settings) -> ExplorationSpec:
    e = settings.exploration
    return ExplorationSpec(e.algorithm, e.epsilon, e.softmax_lambda, e.squarecb_gamma_scale)


def policy_version(settings: Settings, models: list[ModelSpec]) -> str:
    """The version name of the policy ``build_policy`` serves, without building it."""
    if settings.policy_model_path is not None:
        path: Path = settings.policy_model_path
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        return f"file:{path.name}@{digest}"
    prefs = ",".join(f"{k}={v}" for k, v in sorted(settings.tier_preferences.items()))
    digest = hashlib.sha256(f"{prefs};{sorted(m.id for m in models)}".encode()).hexdigest()[:12]
    return f"prior@{digest}"


def build_policy(settings: Settings, models: list[ModelSpec]) -> RoutingPolicy:
    """The configured model file if there is one, else the tier-preference prior."""
    spec = exploration_spec(settings)
    version = policy_version(settings, models)
    if settings.policy_model_path is not None:
        model = VWPolicyModel.load(settings.policy_model_path)
    else:
        model = train_prior(
            models,
            settings.tier_preferences,
            spec,
            examples_per_kind=settings.prior_examples_per_kind,
            seed=settings.seed,
        )
    return RoutingPolicy(model, version, spec, settings.seed)
