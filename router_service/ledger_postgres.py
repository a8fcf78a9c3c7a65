"""The shared ledger store: PostgreSQL, one truth for any number of router replicas.

Each change to a task's books is one transaction that starts with ``SELECT ... FOR UPDATE`` on
the task's row: replicas deciding for the same task queue on that lock, so the headroom a
decision reads is the headroom it commits against, and different tasks never wait for each
other. Settling deletes the reservation row under the same lock and inserts a settlement row
keyed by decision id, so an outcome and an expiry of one decision cannot both be booked.
Round trips are what a decision pays for here. A router keeps each task's books as it last saw
them stored (its own last commit, or what a lost commit returned): a decision is drafted on
them and committed by one conditional statement, an outcome settled by another, each checking
the books it was made on and returning them when they changed; both are awaited on the event
loop. Locked transactions remain for expiry, closing, and drafts that lose too often.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from router_service.bounded_cache import BoundedCache
from router_service.errors import ConfigError, Unavailable
from router_service.ledger import (
    Clock,
    DecisionRef,
    Reservation,
    Settlement,
    TaskBooks,
    already_settled,
    task_closed,
)
from router_service.ledger_memory import unknown_decision, unknown_task
from router_service.ledger_postgres_loop import LoopConnections
from router_service.ledger_postgres_sql import (
    BOOKS_UNLESS_KEPT,
    INSERT_DECISION_IF,
    INSERT_RESERVATION_IF,
    RESERVATION_AND_BOOKS,
    SETTLE_IF,
    SETTLED_SQL,
    UPDATE_BOOKS_IF,
    Known,
    settle_if_params,
)
from router_service.ledger_schema import (
    INSERT_RESERVATION,
    INSERT_SETTLEMENT,
    RESERVATION_COLUMNS,
    SCHEMA,
    SETTLEMENT_COLUMNS,
    book_values,
    books_from_row,
    books_params,
    reservation_from_row,
    reservation_params,
    settlement_params,
    update_books_sql,
)
from router_service.ledger_sql import SqlLedgerStore
from router_service.schemas import Budget, Task

SCHEMA_LOCK = 0x6C656467  # pg_advisory_xact_lock key: replicas starting together create once
CONNECT_TIMEOUT_SECONDS = 10.0
KNOWN_TASKS = 4096  # tasks whose books this router keeps as it last saw them stored
KNOWN_RESERVATIONS = 16384  # reservations this router made, for settling them without a read
SETTLE_TRIES = 3  # conditional settlements on changed books before one takes the lock


class PostgresLedgerStore(SqlLedgerStore):
    """The ledger in a PostgreSQL database, reached through a small connection pool."""

    lock_suffix = " FOR UPDATE"
    placeholder = "%s"
    remote = True

    def __init__(
        self,
        uri: str,
        clock: Clock = time.time,
        pool_size: int = 4,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(clock)
        self._uri, self._pool_size, self._timeout = uri, pool_size, connect_timeout
        self._loop_conns: LoopConnections | None = None  # for the statements awaited on a loop
        self._known: BoundedCache[str, Known] = BoundedCache(KNOWN_TASKS)
        self._reservations: BoundedCache[str, Reservation] = BoundedCache(KNOWN_RESERVATIONS)
        self._pool = ConnectionPool(
            uri,
            min_size=1,
            max_size=pool_size,
            open=False,
            name="budget-router-ledger",
            timeout=connect_timeout,
            kwargs={"autocommit": True},  # transactions are explicit: reads need no BEGIN
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
            with self._txn() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for statement in SCHEMA.format(
                    serial="BIGSERIAL", blob="BYTEA", without_rowid=""
                ).split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except (PoolTimeout, Unavailable) as exc:
            self._pool.close()
            raise ConfigError(
                f"BUDGET_ROUTER_LEDGER_URI: cannot reach PostgreSQL at {_safe(uri)} "
                f"within {connect_timeout:g} s ({exc})"
            ) from exc

    @contextmanager
    def _txn(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise Unavailable(f"the ledger store is unreachable: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise Unavailable(f"the ledger store is unreachable: {exc}") from exc

    def _write_one(self, text: str, params: tuple[Any, ...]) -> psycopg.Cursor:
        with self._read() as conn:  # autocommit: the statement is its own transaction
            return self._run(conn, text, params)

    # --- what this router knows of the books --------------------------------------------------

    def _remember_row(self, task_id: str, row: tuple[Any, ...]) -> Known:
        """Keep ``budget, closed_at, {BOOK_COLUMNS}`` as read; the budget parsed once per text."""
        budget_text, closed_at, *values = row
        seen = self._known.get(task_id)
        if seen is not None and seen.budget_text == budget_text:
            budget = seen.budget
        else:
            budget = Budget.model_validate_json(budget_text)
        known = Known(budget_text, budget, closed_at is not None, tuple(values))
        self._known.put(task_id, known)
        return known

    def open_task(self, task: Task) -> None:
        super().open_task(task)
        budget_text = task.budget.model_dump_json()  # as the base class stored it
        fresh = book_values(TaskBooks(task.budget))
        self._known.put(task.task_id, Known(budget_text, task.budget, False, fresh))

    def known_draft(self, task_id: str) -> PostgresDraft | None:
        """A draft on the books as last seen (at this router's last commit for the task, or as
        the last lost commit returned them): no round trip before the decision."""
        known = self._known.get(task_id)
        return None if known is None else self._draft_on(task_id, known)

    def draft(self, task_id: str) -> PostgresDraft | None:
        """The books read in one unlocked query; None when overdue reservations need the lock."""
        with self._read() as conn:
            row = self._task_row(conn, task_id, lock=False)
        return self._draft_on(task_id, self._remember_row(task_id, row))

    def _draft_on(self, task_id: str, known: Known) -> PostgresDraft | None:
        books = known.books()
        if books.closed:
            raise task_closed(task_id)
        if self._clock() >= books.next_expiry:
            return None
        return PostgresDraft(self, task_id, books, known)

    def _commit_draft(self, draft: PostgresDraft) -> bool:
        """One statement: the books written only if they still hold what was read, and with
        them the draft's reservations and records; whether it was written. When not, the
        statement returns the books as they are, which the next draft starts from."""
        sql, params = self._draft_statement(draft)
        with self._read() as conn:  # autocommit: one statement, one transaction
            row = self._run(conn, sql, params).fetchone()
        return self._drafted(draft, row)

    async def _commit_draft_on_loop(self, draft: PostgresDraft) -> bool:
        """:meth:`_commit_draft` awaited on the running event loop."""
        sql, params = self._draft_statement(draft)
        return self._drafted(draft, await self._on_loop().fetchone(self._sql(sql), params))

    def _draft_statement(self, draft: PostgresDraft) -> tuple[str, list[Any]]:
        known = draft.known
        params = [
            *books_params(draft.task_id, draft.books, None),
            known.budget_text,
            *known.values,
        ]
        parts = []
        for index, reservation in enumerate(draft.pending):
            parts.append(f"held{index} AS ({INSERT_RESERVATION_IF})")
            params.extend(reservation_params(reservation))
        for index, (ref, packed, is_step) in enumerate(draft.history):
            parts.append(f"logged{index} AS ({INSERT_DECISION_IF})")
            params.extend((*ref, int(is_step), packed))
        ctes = "".join(f", {part}" for part in parts)
        params.append(draft.task_id)
        return f"WITH kept AS ({UPDATE_BOOKS_IF}){ctes} {BOOKS_UNLESS_KEPT}", params

    def _drafted(self, draft: PostgresDraft, result: tuple[Any, ...] | None) -> bool:
        """Whether the draft's statement wrote; what this router knows of the books after it."""
        assert result is not None, "the statement answers one row"
        written, *row = result
        if written:
            self._known.put(draft.task_id, draft.known._replace(values=book_values(draft.books)))
            for reservation in draft.pending:
                self._reservations.put(reservation.decision_id, reservation)
            return True
        if row[0] is None:
            self._known.drop(draft.task_id)
            raise unknown_task(draft.task_id)
        self._remember_row(draft.task_id, tuple(row))
        return False

    # --- settling ------------------------------------------------------------------------------

    def settle(
        self, decision_id: str, cost_dollars: float, input_tokens: int, output_tokens: int
    ) -> Settlement:
        steps = self._settling(decision_id, cost_dollars, input_tokens, output_tokens)
        with self._read() as conn:  # autocommit: each statement its own transaction
            answer = None
            try:
                while True:
                    sql, params = steps.send(answer)
                    answer = self._run(conn, sql, params).fetchone()
            except StopIteration as done:
                settlement = done.value
        if settlement is None:
            return super().settle(decision_id, cost_dollars, input_tokens, output_tokens)
        return settlement

    async def settle_on_loop(
        self, decision_id: str, cost_dollars: float, input_tokens: int, output_tokens: int
    ) -> Settlement:
        """:meth:`settle`, its round trips awaited on the running event loop."""
        steps = self._settling(decision_id, cost_dollars, input_tokens, output_tokens)
        conns = self._on_loop()
        answer = None
        try:
            while True:
                sql, params = steps.send(answer)
                answer = await conns.fetchone(self._sql(sql), params)
        except StopIteration as done:
            settlement = done.value
        if settlement is None:
            return await asyncio.to_thread(
                super().settle, decision_id, cost_dollars, input_tokens, output_tokens
            )
        return settlement

    def _settling(
        self, decision_id: str, cost_dollars: float, input_tokens: int, output_tokens: int
    ) -> Generator[tuple[str, tuple[Any, ...]], tuple[Any, ...] | None, Settlement | None]:
        """Settling as the statements it sends, each answered with its first row; None: take
        the lock. One conditional statement on the books as known (read first if not) deletes
        the reservation, records the settlement and writes the books only if the books are as
        known; when they changed, it returns them and settling tries again on them, up to
        :data:`SETTLE_TRIES` times."""
        reservation = self._reservations.get(decision_id)
        known = None if reservation is None else self._known.get(reservation.task_id)
        try:
            if reservation is None or known is None:
                row = yield RESERVATION_AND_BOOKS, (decision_id,)
                if row is None:
                    return (yield from self._unsettleable(decision_id))
                reservation, books_row = _reservation_and_books(row)
                known = self._remember_row(reservation.task_id, books_row)
            for _ in range(SETTLE_TRIES):
                books = known.books()
                settlement = books.book(reservation, cost_dollars, input_tokens, output_tokens)
                params = settle_if_params(settlement, known, books, self._clock())
                booked, *row, open_ = yield SETTLE_IF, params
                if booked:
                    self._known.put(reservation.task_id, known._replace(values=book_values(books)))
                    return settlement
                if not open_ or row[0] is None:  # settled or expired meanwhile, or never made
                    return (yield from self._unsettleable(decision_id))
                known = self._remember_row(reservation.task_id, tuple(row))
            return None
        finally:
            self._reservations.drop(decision_id)

    def _unsettleable(
        self, decision_id: str
    ) -> Generator[tuple[str, tuple[Any, ...]], tuple[Any, ...] | None, NoReturn]:
        settled = yield SETTLED_SQL, (decision_id,)
        if settled is None:
            raise unknown_decision(decision_id)
        raise already_settled(decision_id, expired=bool(settled[0]))

    def _on_loop(self) -> LoopConnections:
        """The connections of the running event loop (one loop at a time uses a store)."""
        loop = asyncio.get_running_loop()
        conns = self._loop_conns
        if conns is None or conns.loop is not loop:
            if conns is not None:
                conns.close()
            conns = self._loop_conns = LoopConnections(self._uri, self._pool_size, self._timeout)
        return conns

    def _commit_reservations(
        self, conn: Any, task_id: str, reservations: list[Reservation], books: TaskBooks
    ) -> None:
        if len(reservations) != 1:
            super()._commit_reservations(conn, task_id, reservations, books)
            return
        self._run(
            conn,
            f"WITH held AS ({INSERT_RESERVATION}) {update_books_sql(None)}",
            (*reservation_params(reservations[0]), *books_params(task_id, books, None)),
        )

    def _lock_for_settling(
        self, conn: Any, decision_id: str
    ) -> tuple[Reservation, TaskBooks] | None:
        locking = f"{RESERVATION_AND_BOOKS} FOR UPDATE OF t"
        row = self._run(conn, locking, (decision_id,)).fetchone()
        if row is None:
            return None
        reservation, books_row = _reservation_and_books(row)
        return reservation, books_from_row(books_row)

    def _book_settlement(self, conn: Any, settlement: Settlement, books: TaskBooks) -> bool:
        r = settlement.reservation
        (deleted,) = self._run(
            conn,
            "WITH gone AS (DELETE FROM ledger_reservations WHERE decision_id = ? "
            "RETURNING decision_id), "
            f"booked AS ({INSERT_SETTLEMENT.split(' VALUES ')[0]} "
            f"SELECT {', '.join(['?'] * len(SETTLEMENT_COLUMNS.split(',')))} FROM gone), "
            f"kept AS ({update_books_sql(None)} AND EXISTS (SELECT 1 FROM gone)) "
            "SELECT count(*) FROM gone",
            (
                r.decision_id,
                *settlement_params(settlement, self._clock()),
                *books_params(r.task_id, books, None),
            ),
        ).fetchone()
        return deleted == 1

    def close(self) -> None:
        if self._loop_conns is not None:
            self._loop_conns.close()
        self._pool.close()


class PostgresDraft:
    """A decision's view of a task's books, committed by :meth:`commit` if still current.

    Decisions for one task rarely overlap (an agent's steps come one after another), so
    checking at commit beats holding the row lock while the policy scores and samples.
    """

    def __init__(
        self, store: PostgresLedgerStore, task_id: str, books: TaskBooks, known: Known
    ) -> None:
        self._store = store
        self.task_id = task_id
        self.books = books
        self.known = known  # the books as last seen stored, compared at commit
        self.pending: list[Reservation] = []
        self.history: list[tuple[DecisionRef, bytes, bool]] = []

    def __enter__(self) -> PostgresDraft:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing: :meth:`commit` writes, off the event loop."""

    def reserve(self, reservation: Reservation) -> None:
        self.books.reserve(reservation)
        self.pending.append(reservation)

    def record(self, ref: DecisionRef, packed: bytes, is_step: bool) -> None:
        self.history.append((ref, packed, is_step))

    def commit(self) -> bool:
        return self._store._commit_draft(self)

    async def commit_on_loop(self) -> bool:
        return await self._store._commit_draft_on_loop(self)


_RESERVATION_WIDTH = len(RESERVATION_COLUMNS.split(","))


def _reservation_and_books(row: tuple[Any, ...]) -> tuple[Reservation, tuple[Any, ...]]:
    """A ``RESERVATION_AND_BOOKS`` row: the reservation, and its task's books columns as read."""
    return reservation_from_row(row[:_RESERVATION_WIDTH]), tuple(row[_RESERVATION_WIDTH:])


def _safe(uri: str) -> str:
    """The URI without its password, for error messages."""
    info = psycopg.conninfo.conninfo_to_dict(uri)
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)
