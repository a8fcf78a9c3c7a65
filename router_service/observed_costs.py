"""Costs observed per (model, step type), for reserving budget on models without prices."""

from __future__ import annotations

import threading
from collections import defaultdict


class ObservedCosts:
    """The largest recent step cost per (model, step type), falling back to the model's."""

    def __init__(self, window: int = 50) -> None:
        self._window = window
        self._by_type: dict[tuple[str, str], list[float]] = defaultdict(list)
        self._by_model: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def record(self, model: str, step_type: str, cost: float) -> None:
        with self._lock:
            for series in (self._by_type[(model, step_type)], self._by_model[model]):
                series.append(cost)
                del series[: -self._window]

    def estimate(self, model: str, step_type: str) -> float | None:
        """A conservative estimate (the window's maximum), or None if nothing was observed."""
        series = self._by_type.get((model, step_type)) or self._by_model.get(model)
        return max(series) if series else None
