"""The learner's VW text, with what repeats from step to step kept as text.

An action's catalog facts (namespace ``model``) are one dict per content id in the decoder,
shared by every decision that refers to it, so their text is kept by that dict's identity; its
recent record (``recent``) is kept by content (``namespace_part``'s cache); only its estimated
cost (``cost``) is rendered at each step. The text is byte for byte :func:`example_text`'s, so
the model learns exactly the same updates.
"""

from __future__ import annotations

from collections.abc import Mapping

from learner.vw_model import (
    FeatureValue,
    LabeledExample,
    Namespaces,
    example_text,
    log_cost_text,
    namespace_part,
)

CACHED_FACTS = 4096  # facts dicts; the decoder keeps one per content id in use
ROUTER_ACTION = ("model", "recent", "cost")  # an action's namespaces as the router sends them


class ExampleTexts:
    """:func:`learner.vw_model.example_text`, keeping each facts dict's text.

    An entry holds its dict, so an identity match is that very dict; past ``size`` entries
    (decisions with their facts inline bring a new dict each) a cache starts afresh.
    """

    def __init__(self, size: int = CACHED_FACTS) -> None:
        self._size = size
        self._facts: dict[int, tuple[Mapping[str, FeatureValue], str]] = {}
        self._static: dict[tuple[int, tuple[object, ...]], tuple[Mapping[str, FeatureValue], str]]
        self._static = {}

    def example(self, example: LabeledExample) -> str:
        """The example's labelled text, as ``example_text`` makes it."""
        return example_text(example, self.action)

    def action(self, action: Namespaces) -> str:
        """``namespace_text(action)``."""
        if tuple(action) == ROUTER_ACTION:
            facts, recent, cost = action.values()
            return self._facts_and_recent(facts, recent) + _cost(cost)
        parts = []
        for name, features in action.items():
            if name == "model":
                parts.append(self._model(features))
            elif name == "cost":
                parts.append(_cost(features))
            else:
                parts.append(namespace_part(name, features))
        return " ".join(parts)

    def _facts_and_recent(
        self, facts: Mapping[str, FeatureValue], recent: Mapping[str, FeatureValue]
    ) -> str:
        """A router action's text up to its cost, kept by facts dict and recent record."""
        key = (id(facts), tuple(recent.items()))
        entry = self._static.get(key)
        if entry is not None and entry[0] is facts:
            return entry[1]
        text = f"{self._model(facts)} {namespace_part('recent', recent)} "
        if len(self._static) >= self._size:
            self._static.clear()
        self._static[key] = (facts, text)
        return text

    def _model(self, facts: Mapping[str, FeatureValue]) -> str:
        entry = self._facts.get(id(facts))
        if entry is not None and entry[0] is facts:
            return entry[1]
        text = namespace_part("model", facts)
        if len(self._facts) >= self._size:
            self._facts.clear()
        self._facts[id(facts)] = (facts, text)
        return text


def _cost(features: Mapping[str, FeatureValue]) -> str:
    """The ``cost`` namespace; its one weighted feature without the general loop."""
    if len(features) == 1:
        ((key, value),) = features.items()
        if value.__class__ is float and key == "log_cost":
            return log_cost_text(value)
    return namespace_part("cost", features)
