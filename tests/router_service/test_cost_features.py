"""The cost namespace rendered directly is the text the learner renders from the logged features."""

from __future__ import annotations

import random

import pytest

from learner.vw_model import namespace_text
from router_service.features import cost_features, cost_text

_rng = random.Random(0)
COSTS = [None, 0.0, 1e-12, 1e-6, 0.999999, 1.0, 5e-5, 123.456] + [
    10 ** _rng.uniform(-9, 2) for _ in range(200)
]


@pytest.mark.parametrize("cost", COSTS)
def test_cost_text_is_namespace_text_of_cost_features(cost: float | None) -> None:
    assert cost_text(cost) == namespace_text({"cost": cost_features(cost)})
