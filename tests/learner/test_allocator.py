"""The budget allocator's dual updates per trust domain."""

from __future__ import annotations

import json

import pytest

from learner.allocator import BudgetAllocator


def test_lambda_rises_while_tasks_overspend_the_target() -> None:
    allocator = BudgetAllocator(initial=1.0, step=0.5, target=0.8)
    prices = [allocator.observe_task("eng", 0.95, 1.0) for _ in range(4)]
    assert prices == pytest.approx([1.075, 1.15, 1.225, 1.3])
    assert allocator.price("ops") == 1.0  # other domains keep their own price


def test_lambda_falls_to_zero_and_stays_there_under_the_target() -> None:
    allocator = BudgetAllocator(initial=0.3, step=0.5, target=0.8)
    prices = [allocator.observe_task("eng", 0.2, 1.0) for _ in range(3)]
    assert prices == pytest.approx([0.0, 0.0, 0.0])


def test_lambda_settles_where_spend_meets_the_target() -> None:
    allocator = BudgetAllocator(initial=0.0, step=0.2, target=0.5)
    for _ in range(2_000):  # spend falls as the price rises: ratio = 1 / (1 + lambda)
        allocator.observe_task("eng", 1.0 / (1.0 + allocator.price("eng")), 1.0)
    assert allocator.price("eng") == pytest.approx(1.0, abs=0.05)


def test_state_round_trips_through_json() -> None:
    allocator = BudgetAllocator(initial=1.0, step=0.5, target=0.8)
    allocator.observe_task("eng", 1.0, 1.0)
    allocator.observe_task("ops", 0.1, 1.0)
    state = json.loads(json.dumps(allocator.to_state()))
    restored = BudgetAllocator.from_state(state)
    assert restored.lambdas() == allocator.lambdas() == pytest.approx({"eng": 1.1, "ops": 0.65})
    assert state["domains"]["eng"]["tasks"] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial": -1.0, "step": 0.1, "target": 0.5}, "lambda_initial >= 0"),
        ({"initial": 1.0, "step": 0.1, "target": 0.0}, "0 < spend_target_ratio <= 1"),
    ],
)
def test_invalid_parameters_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BudgetAllocator(**kwargs)


def test_foreign_state_version_is_refused() -> None:
    with pytest.raises(ValueError, match="allocator state version: expected 1"):
        BudgetAllocator.from_state({"version": 7})


def test_a_domains_own_target_sets_where_its_price_settles() -> None:
    allocator = BudgetAllocator(initial=0.0, step=0.2, target=0.5, targets={"cheap": 0.25})
    for _ in range(3_000):  # spend falls as the price rises: ratio = 1 / (1 + lambda)
        for domain in ("cheap", "eng"):
            allocator.observe_task(domain, 1.0 / (1.0 + allocator.price(domain)), 1.0)
    assert allocator.target_of("cheap") == 0.25 and allocator.target_of("eng") == 0.5
    assert allocator.price("cheap") == pytest.approx(3.0, abs=0.1)
    assert allocator.price("eng") == pytest.approx(1.0, abs=0.05)
    restored = BudgetAllocator.from_state(json.loads(json.dumps(allocator.to_state())))
    assert restored.target_of("cheap") == 0.25


def test_domain_targets_outside_the_unit_interval_are_refused() -> None:
    with pytest.raises(ValueError, match="domain targets must be in"):
        BudgetAllocator(initial=1.0, step=0.1, target=0.5, targets={"eng": 1.5})
