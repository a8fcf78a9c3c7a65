"""PostgreSQL statements awaited on the event loop: a few connections per loop, and a
PostgreSQL store's decisions and settlements committed through them."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from router_service.errors import Conflict, NotFound, Unavailable
from router_service.ledger_postgres import PostgresLedgerStore
from router_service.ledger_postgres_loop import LoopConnections
from tests.router_service.test_ledger import FakeClock, ref, reservation, task


def test_concurrent_statements_share_at_most_size_connections(postgres_uri: str) -> None:
    async def main() -> tuple[list[tuple], int]:
        conns = LoopConnections(postgres_uri, size=2, connect_timeout=5)
        try:
            statement = "SELECT pg_backend_pid() FROM pg_sleep(0.02)"
            rows = await asyncio.gather(*(conns.fetchone(statement, ()) for _ in range(8)))
            return rows, len(conns._all)  # type: ignore[return-value]
        finally:
            conns.close()

    rows, opened = asyncio.run(main())
    assert opened == 2 and len({pid for (pid,) in rows}) == 2


def test_a_refused_statement_leaves_its_connection_usable(postgres_uri: str) -> None:
    async def main() -> tuple[int, ...] | None:
        conns = LoopConnections(postgres_uri, size=1, connect_timeout=5)
        try:
            with pytest.raises(psycopg.errors.DivisionByZero):
                await conns.fetchone("SELECT 1 / 0", ())
            return await conns.fetchone("SELECT 1", ())
        finally:
            conns.close()

    assert asyncio.run(main()) == (1,)


def test_a_statement_cancelled_in_flight_leaves_the_connections_usable(postgres_uri: str) -> None:
    async def main() -> tuple[int, ...] | None:
        conns = LoopConnections(postgres_uri, size=1, connect_timeout=5)
        try:
            waiting = asyncio.ensure_future(conns.fetchone("SELECT 1 FROM pg_sleep(5)", ()))
            await asyncio.sleep(0.2)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            answer = await conns.fetchone("SELECT 2", ())
            assert len(conns._all) == 1, "reused if psycopg cancelled it cleanly, else replaced"
            return answer
        finally:
            conns.close()

    assert asyncio.run(main()) == (2,)


def test_an_unreachable_server_is_unavailable(postgres_uri: str) -> None:
    unreachable = postgres_uri.rsplit("@", 1)[0] + "@127.0.0.1:1/ledger"

    async def main() -> None:
        conns = LoopConnections(unreachable, size=1, connect_timeout=1)
        for _ in range(2):  # the failed opening leaves room for the next try
            with pytest.raises(Unavailable, match="unreachable"):
                await conns.fetchone("SELECT 1", ())

    asyncio.run(main())


def test_a_store_commits_and_settles_on_each_loop_that_uses_it(postgres_uri: str) -> None:
    store = PostgresLedgerStore(postgres_uri, FakeClock())
    try:
        store.open_task(task())

        async def decide_and_settle(decision_id: str) -> float:
            draft = store.known_draft("t")
            assert draft is not None
            draft.reserve(reservation(decision_id, 0.25))
            draft.record(ref(decision_id), b"answer", is_step=True)
            assert await draft.commit_on_loop()
            settlement = await store.settle_on_loop(decision_id, 0.125, 1, 1)
            with pytest.raises(Conflict, match="already has an outcome"):
                await store.settle_on_loop(decision_id, 0.125, 1, 1)
            with pytest.raises(NotFound):
                await store.settle_on_loop("never", 0.1, 1, 1)
            assert settlement.ledger is not None
            return settlement.ledger.spent_dollars

        assert asyncio.run(decide_and_settle("d1")) == 0.125
        assert asyncio.run(decide_and_settle("d2")) == 0.25, "a second loop, new connections"
        assert store.view("t").spent_dollars == 0.25
    finally:
        store.close()
