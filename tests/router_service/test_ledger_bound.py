"""Calls that wait on a remote ledger store leave the event loop free; local ones stay inline."""

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from router_service.state import RouterState


@pytest.mark.parametrize("remote", [True, False])
def test_ledger_bound_calls_run_off_the_loop_only_for_a_remote_store(remote: bool) -> None:
    state = SimpleNamespace(ledger=SimpleNamespace(remote=remote))
    ticks = 0

    async def tick() -> None:  # advances only while the event loop is free
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def store_call(value: str) -> tuple[str, bool]:
        """Waits like a round trip, until the loop has moved on (or a deadline)."""
        seen, deadline = ticks, time.monotonic() + (5.0 if remote else 0.2)
        while ticks < seen + 10 and time.monotonic() < deadline:
            threading.Event().wait(0.001)
        return value, ticks >= seen + 10

    async def main() -> tuple[str, bool]:
        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        try:
            return await RouterState.ledger_bound(state, store_call, "booked")  # type: ignore[arg-type]
        finally:
            ticker.cancel()

    value, loop_moved_meanwhile = asyncio.run(main())
    assert value == "booked"
    assert loop_moved_meanwhile is remote
