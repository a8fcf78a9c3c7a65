"""The background sweep outlives a failing sweep: reservations keep expiring afterwards."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from router_service.app import _expire_reservations
from router_service.errors import Unavailable


class FlakyState:
    """What the sweeper uses of RouterState; the first sweep fails as an unreachable store."""

    def __init__(self) -> None:
        self.settings = SimpleNamespace(expiry_sweep_seconds=0.001)
        self.sweeps = 0
        self.swept_twice = asyncio.Event()

    async def ledger_bound(self, call: Callable[..., Any], *args: Any) -> Any:
        return call(*args)

    def sweep(self) -> None:
        self.sweeps += 1
        if self.sweeps == 1:
            raise Unavailable("the ledger store is unreachable: connection refused")
        self.swept_twice.set()


def test_a_failed_sweep_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> int:
        state = FlakyState()
        sweeper = asyncio.create_task(_expire_reservations(state))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(state.swept_twice.wait(), timeout=10)
        finally:
            sweeper.cancel()
        return state.sweeps

    with caplog.at_level(logging.ERROR, logger="budget_router.app"):
        assert asyncio.run(scenario()) >= 2
    assert "reservation sweep failed" in caplog.text
    assert "connection refused" in caplog.text
