"""Costs observed per (model, step type), for reserving budget on models without prices.

If a model bills ``p_in`` per input and ``p_out`` per output token, every observed call bounds
both: ``p_in <= cost / input_tokens`` and ``p_out <= cost / output_tokens``. The smallest of
those bounds over recent calls is still an upper bound, so ``min_in * input + min_out * output``
covers a new step's cost whatever its mix of input and output; a margin absorbs noise in
self-hosted costs.
"""

from __future__ import annotations

import threading
from collections import defaultdict

SAFETY_MARGIN = 1.25
Rates = tuple[float, float]


class ObservedCosts:
    """Per-token cost bounds per (model, step type), falling back to the model's."""

    def __init__(self, window: int = 50) -> None:
        self._window = window
        self._by_type: dict[tuple[str, str], list[Rates]] = defaultdict(list)
        self._by_model: dict[str, list[Rates]] = defaultdict(list)
        self._lock = threading.Lock()

    def record(self, model: str, step_type: str, cost: float, inputs: int, outputs: int) -> None:
        rates = (cost / max(inputs, 1), cost / max(outputs, 1))
        with self._lock:
            for series in (self._by_type[(model, step_type)], self._by_model[model]):
                series.append(rates)
                del series[: -self._window]

    def estimate(self, model: str, step_type: str, inputs: int, outputs: int) -> float | None:
        """A cost no smaller than the step's, or None if nothing was observed for the model."""
        series = self._by_type.get((model, step_type)) or self._by_model.get(model)
        if not series:
            return None
        per_input = min(rate for rate, _ in series)
        per_output = min(rate for _, rate in series)
        return (per_input * inputs + per_output * outputs) * SAFETY_MARGIN
