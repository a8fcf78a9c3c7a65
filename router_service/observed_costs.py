"""Costs observed per (model, step type), for reserving budget on models without prices.

Kept as dollars per token, so a bigger step reserves more: the reservation for an unpriced
model is the highest recent rate times the step's tokens, with a safety margin.
"""

from __future__ import annotations

import threading
from collections import defaultdict

SAFETY_MARGIN = 1.25


class ObservedCosts:
    """The highest recent cost per token per (model, step type), falling back to the model's."""

    def __init__(self, window: int = 50) -> None:
        self._window = window
        self._by_type: dict[tuple[str, str], list[float]] = defaultdict(list)
        self._by_model: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def record(self, model: str, step_type: str, cost: float, tokens: int) -> None:
        rate = cost / max(tokens, 1)
        with self._lock:
            for series in (self._by_type[(model, step_type)], self._by_model[model]):
                series.append(rate)
                del series[: -self._window]

    def estimate(self, model: str, step_type: str, tokens: int) -> float | None:
        """A conservative cost for a step of ``tokens`` tokens, or None if nothing was seen."""
        series = self._by_type.get((model, step_type)) or self._by_model.get(model)
        return max(series) * tokens * SAFETY_MARGIN if series else None
