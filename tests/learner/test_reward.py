"""Reward shaping: quality, task credit, budget price, corrections."""

from __future__ import annotations

import pytest

from learner.reward import RewardShaper
from router_service.events import CorrectionEvent
from tests.learner.test_join import closed, decision, outcome

SHAPER = RewardShaper(task_credit_weight=0.5, reference_task_dollars=2.0)


def test_step_reward_is_quality_minus_priced_budget_fraction() -> None:
    reward = SHAPER.step_reward(decision("d", 0), outcome("d", 1, cost_dollars=0.5), None, 1.0)
    assert reward == pytest.approx(0.8 - 1.0 * 0.5 / 2.0)


def test_failed_step_is_worth_nothing_but_still_pays() -> None:
    result = outcome("d", 1, success=False, cost_dollars=0.2)
    assert SHAPER.step_reward(decision("d", 0), result, None, 2.0) == pytest.approx(-0.2)


def test_task_result_is_credited_and_sets_the_budget() -> None:
    task = closed("t1", 2, quality=0.4, total_dollars=0.5)
    result = outcome("d", 1, cost_dollars=0.1, quality=1.0)
    reward = SHAPER.step_reward(decision("d", 0), result, task, 1.0)
    assert reward == pytest.approx(0.5 * 1.0 + 0.5 * 0.4 - 0.1 / 0.5)
    failed = closed("t1", 2, success=False, total_dollars=0.5)
    assert SHAPER.step_reward(decision("d", 0), result, failed, 0.0) == pytest.approx(0.5)


def test_zero_price_ignores_cost() -> None:
    result = outcome("d", 1, cost_dollars=100.0)
    assert SHAPER.step_reward(decision("d", 0), result, None, 0.0) == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("fields", "updates"),
    [
        ({"preferred_model": "b"}, [(1, 1.0), (0, 0.0)]),
        ({"preferred_model": "a"}, [(0, 1.0)]),
        ({"preferred_model": "b", "rating": "up"}, [(1, 1.0), (0, 0.0)]),
        ({"rating": "down"}, [(0, 0.0)]),
        ({"rating": "up"}, [(0, 1.0)]),
    ],
)
def test_correction_updates(fields: dict[str, object], updates: list[tuple[int, float]]) -> None:
    correction = CorrectionEvent(task_id="t1", decision_id="d", **fields)
    assert SHAPER.correction_updates(decision("d", 0), correction) == updates
