"""The governor's price of a step: a reservation it grants always fits the room it saw."""

from __future__ import annotations

import random

from router_service.catalog import ModelSpec
from router_service.governor import price_step
from router_service.ledger import Reservation, TaskBooks
from router_service.observed_costs import ObservedCosts
from router_service.schemas import Budget
from router_service.settings import TIERS, GovernorSettings

HUGE = 10**12


def model(input_price: float, output_price: float) -> ModelSpec:
    return ModelSpec(
        id="m",
        provider="p",
        tier=TIERS[0],
        input_price_per_mtok=input_price,
        output_price_per_mtok=output_price,
        context_window=HUGE,
    )


def grant_and_reserve(books: TaskBooks, spec: ModelSpec, input_tokens: int, expected: int):
    """Price the step with a grant the budget binds, then reserve it on the books."""
    settings = GovernorSettings(output_grant_factor=1e6)
    room = books.headroom("execution")
    grant, dollars, why = price_step(
        spec, input_tokens, expected, room, settings, ObservedCosts(), "t"
    )
    if why is None:
        books.reserve(
            Reservation("d", "t", "m", "execution", dollars, input_tokens, grant, False, 1e18)
        )
    return grant, dollars, why


def books(total: float, spent: float) -> TaskBooks:
    budget = Budget(total_dollars=total, max_input_tokens=HUGE, max_output_tokens=HUGE)
    return TaskBooks(budget, spent_dollars=spent)


def test_a_budget_bound_grant_never_rounds_over_the_room() -> None:
    # A room and price where (room - fixed) / per_output rounds up by an ulp.
    grant, dollars, why = grant_and_reserve(
        books(83414.15, 42856.05193), model(5, 150), 698384, 135182020
    )
    assert why is None and grant > 135182020
    assert dollars <= books(83414.15, 42856.05193).headroom("execution").dollars


def test_seeded_rooms_and_prices_always_reserve_what_they_grant() -> None:
    rng = random.Random(0)
    for _ in range(20_000):
        total = round(rng.uniform(1, 1_000_000), 2)
        task = books(total, round(rng.uniform(0, total * 0.99), 6))
        spec = model(rng.choice([0.15, 1.1, 5, 15]), rng.choice([0.6, 4.4, 15, 150, 600]))
        input_tokens = rng.randint(0, 10**6)
        room = task.headroom("execution").dollars - (spec.token_cost(input_tokens, 0) or 0)
        expected = max(1, int(room / (spec.output_price_per_mtok / 1e6) * 0.5))
        grant_and_reserve(task, spec, input_tokens, expected)  # raises if it does not fit


def test_input_alone_over_the_room_is_refused_with_a_reason() -> None:
    grant, dollars, why = grant_and_reserve(books(1.0, 0.0), model(1_000_000, 0), 10, 1)
    assert (grant, dollars) == (0, 0.0)
    assert why is not None and "left" in why


def test_without_an_output_price_the_grant_is_every_token_desired() -> None:
    grant, _, why = grant_and_reserve(books(100.0, 0.0), model(1.0, 0.0), 1000, 500)
    assert why is None and grant == 500 * 1_000_000


def test_a_budget_bound_grant_is_the_largest_that_fits() -> None:
    spec = model(1.0, 1.0)
    grant, dollars, why = grant_and_reserve(books(100.0, 0.0), spec, 1000, 500)
    room = books(100.0, 0.0).headroom("execution").dollars
    assert why is None and dollars <= room
    assert (spec.token_cost(1000, 0) or 0) + (grant + 1) * 1e-6 > room
