"""The one module that imports vowpalwabbit: ADF example text, cb labels, predict, learn, save.

Features arrive as ``{namespace: {name: value}}`` dicts, where a string value is a categorical
feature (``name=value``) and a number a weighted one (``name:value``). The router and the learner
both go through this module, so the example format cannot drift between them.
"""

from __future__ import annotations

import functools
import math
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import pylibvw
import vowpalwabbit

FeatureValue = float | int | str | bool
Namespaces = Mapping[str, Mapping[str, FeatureValue]]

# Semantic namespace -> the single character VW uses for interactions.
NAMESPACE_LETTERS: dict[str, str] = {
    "step": "s",
    "task": "t",
    "signals": "g",
    "context": "c",
    "model": "m",
    "cost": "p",
    "recent": "r",
    "content": "w",
    "client": "f",
    "embedding": "e",
}
# Shared x action pairs: what about the step, task, signals and the request's content (its
# words, a client's features, an embedding) makes which model good.
INTERACTIONS = ("sm", "tm", "gm", "cm", "sp", "gp", "sr", "wm", "fm", "em")
# Namespaces whose text repeats across decisions, so it is cached: names and categories (a
# model's id and tier, a task's domain and type) and a model's recent record (the same until
# the rolling features are refreshed). Others carry numbers new at every step.
CACHED_NAMESPACES = frozenset({"model", "task", "recent"})
_COST_PREFIX = f"|{NAMESPACE_LETTERS['cost']} "
_UNSAFE = re.compile(r"[\s|:]+")


@dataclass(frozen=True)
class ExplorationSpec:
    """VW's exploration algorithm and its parameter."""

    algorithm: Literal["epsilon", "softmax", "squarecb"] = "epsilon"
    epsilon: float = 0.05
    softmax_lambda: float = 10.0
    squarecb_gamma_scale: float = 10.0

    def vw_args(self) -> str:
        if self.algorithm == "softmax":
            return f"--softmax --lambda {self.softmax_lambda}"
        if self.algorithm == "squarecb":
            return f"--squarecb --gamma_scale {self.squarecb_gamma_scale}"
        return f"--epsilon {self.epsilon}"


@functools.lru_cache(maxsize=65_536)
def _token(text: str) -> str:
    return _UNSAFE.sub("_", text.strip()) or "_"


def namespace_text(namespaces: Namespaces) -> str:
    """The VW text of one example line's features (without label or ``shared``)."""
    return " ".join([namespace_part(name, features) for name, features in namespaces.items()])


def namespace_part(name: str, features: Mapping[str, FeatureValue]) -> str:
    """One namespace's text, as :func:`namespace_text` joins it."""
    if name in CACHED_NAMESPACES:
        return _cached_text(name, tuple(features.items()))
    return _features_text(_letter(name), features.items())


def log_cost_text(value: float) -> str:
    """``namespace_part("cost", {"log_cost": value})`` without the general loop: the one
    namespace rendered for every action at every step, by the router and the learner alike."""
    if value != 0 and math.isfinite(value):
        return f"{_COST_PREFIX}log_cost:{value:.6g}"
    return _COST_PREFIX


def _letter(name: str) -> str:
    letter = NAMESPACE_LETTERS.get(name)
    if letter is None:
        raise ValueError(f"unknown feature namespace {name!r}")
    return letter


@functools.lru_cache(maxsize=4_096)
def _cached_text(name: str, features: tuple[tuple[str, FeatureValue], ...]) -> str:
    """A namespace of ``CACHED_NAMESPACES``.

    The others (costs, token counts, prompt n-grams) are rendered afresh: caching them would
    fill the cache and the collector's young generation with keys never seen again.
    """
    return _features_text(_letter(name), features)


def _features_text(letter: str, features: Iterable[tuple[str, FeatureValue]]) -> str:
    """One namespace's text."""
    items = []
    for key, value in features:
        if value.__class__ is float:  # the common case first: weighted features
            if value != 0 and math.isfinite(value):
                items.append(f"{_token(key)}:{value:.6g}")
        elif isinstance(value, str):
            items.append(f"{_token(key)}={_token(value)}")
        elif isinstance(value, bool):
            if value:
                items.append(_token(key))
        elif math.isfinite(value) and value != 0:
            items.append(f"{_token(key)}:{float(value):.6g}")
    return f"|{letter} " + " ".join(items)


def example_lines(
    shared: Namespaces,
    actions: Sequence[Namespaces],
    label: tuple[int, float, float] | None = None,
) -> list[str]:
    """VW ``cb_explore_adf`` lines; ``label`` is (chosen index, cost, probability)."""
    lines = ["shared " + namespace_text(shared)]
    for index, action in enumerate(actions):
        prefix = ""
        if label is not None and label[0] == index:
            prefix = f"0:{label[1]:.6g}:{label[2]:.6g} "
        lines.append(prefix + namespace_text(action))
    return lines


class LabeledExample(NamedTuple):
    """One ``learn`` call's arguments, for :meth:`VWPolicyModel.learn_many`."""

    shared: Namespaces
    actions: Sequence[Namespaces]
    chosen: int
    cost: float
    probability: float


def example_text(
    example: LabeledExample, action_text: Callable[[Namespaces], str] = namespace_text
) -> str:
    """The example's labelled ``example_lines`` as one string, as VW's parser takes it.

    ``action_text`` renders an action as :func:`namespace_text` does (it may cache)."""
    shared, actions, chosen, cost, probability = example
    if not 0 < probability <= 1:
        raise ValueError(f"probability must be in (0, 1], got {probability}")
    lines = [action_text(action) for action in actions]
    if not 0 <= chosen < len(lines):
        raise ValueError(f"chosen index {chosen} is out of range for {len(lines)} actions")
    lines[chosen] = f"0:{cost:.6g}:{probability:.6g} " + lines[chosen]
    return ("shared " + namespace_text(shared) + "\n" + "\n".join(lines)).strip()


class VWPolicyModel:
    """A ``--cb_explore_adf`` workspace: pmf over candidate actions, updated one event at a time."""

    def __init__(self, workspace: vowpalwabbit.Workspace, args: str) -> None:
        self._workspace = workspace
        self.args = args

    @classmethod
    def create(
        cls, exploration: ExplorationSpec, seed: int = 0, learning: str = ""
    ) -> VWPolicyModel:
        """A fresh model; ``learning`` adds VW options such as ``-l 0.1 --cb_type mtr``."""
        interactions = " ".join(f"-q {pair}" for pair in INTERACTIONS)
        args = (
            f"--cb_explore_adf {exploration.vw_args()} {interactions} {learning} "
            f"--random_seed {seed} --quiet"
        )
        return cls(vowpalwabbit.Workspace(args), args)

    @classmethod
    def load(cls, path: Path) -> VWPolicyModel:
        """Load a model saved by :meth:`save` (VW keeps its options inside the file)."""
        args = f"--quiet -i {path}"
        return cls(vowpalwabbit.Workspace(args), args)

    @classmethod
    def from_bytes(cls, data: bytes) -> VWPolicyModel:
        with tempfile.NamedTemporaryFile(suffix=".vw") as handle:
            handle.write(data)
            handle.flush()
            return cls.load(Path(handle.name))

    def predict(self, shared: Namespaces, actions: Sequence[Namespaces]) -> list[float]:
        """The exploration pmf over ``actions`` (sums to 1)."""
        return self.predict_text(namespace_text(shared), [namespace_text(a) for a in actions])

    def predict_text(self, shared: str, actions: Sequence[str]) -> list[float]:
        """``predict`` on features already rendered by :func:`namespace_text`."""
        return self._predicted(shared, actions, with_scores=False)[0]

    def score_text(self, shared: str, actions: Sequence[str]) -> tuple[list[float], list[float]]:
        """The exploration pmf and each action's score (its estimated cost: lower is better)."""
        return self._predicted(shared, actions, with_scores=True)

    def _predicted(
        self, shared: str, actions: Sequence[str], with_scores: bool
    ) -> tuple[list[float], list[float]]:
        """Goes to VW's bindings directly: pyvw's wrapper objects cost three times the
        prediction. The scores are read only when asked for (one call per action)."""
        workspace = self._workspace
        examples = workspace._parse("shared " + shared + "\n" + "\n".join(actions))
        try:
            pylibvw.vw.predict_multi(workspace, examples)
            pmf = examples[0].get_action_scores()
            scores = [e.get_partial_prediction() for e in examples[1:]] if with_scores else []
        finally:
            pylibvw.vw._finish_example_multi_ex(workspace, examples)
        total = float(sum(pmf))
        return [float(p) / total for p in pmf], scores

    def learn(
        self,
        shared: Namespaces,
        actions: Sequence[Namespaces],
        chosen: int,
        cost: float,
        probability: float,
    ) -> None:
        """One importance-weighted update: ``cost`` is minus the reward of ``chosen``."""
        if not 0 < probability <= 1:
            raise ValueError(f"probability must be in (0, 1], got {probability}")
        self._workspace.learn(example_lines(shared, actions, (chosen, cost, probability)))

    def learn_many(self, examples: Sequence[LabeledExample]) -> None:
        """:meth:`learn` each example in order (the same updates, the same model bytes)."""
        self.learn_lines([example_text(example) for example in examples])

    def learn_lines(self, examples: Sequence[str]) -> None:
        """Learn multi-line examples made by :func:`example_text`, in order.

        Straight through VW's parser and learner, without pyvw's per-line Python wrappers
        (they cost more than the update itself).
        """
        workspace = self._workspace
        for text in examples:
            parsed = pylibvw.vw._parse(workspace, text)
            try:
                pylibvw.vw.learn_multi(workspace, parsed)
            finally:
                pylibvw.vw._finish_example_multi_ex(workspace, parsed)

    def save(self, path: Path) -> None:
        self._workspace.save(str(path))

    def to_bytes(self) -> bytes:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.vw"
            self.save(path)
            return path.read_bytes()

    def close(self) -> None:
        self._workspace.finish()
