"""The PostgreSQL ledger's conditional statements: each checks the books it was drafted on
and commits in one round trip, and what a router knows of a task's books to draft on."""

from __future__ import annotations

from typing import Any, NamedTuple

from router_service.ledger import Settlement, TaskBooks
from router_service.ledger_schema import (
    BOOK_COLUMNS,
    INSERT_SETTLEMENT,
    REF_COLUMNS,
    RESERVATION_COLUMNS,
    SETTLEMENT_COLUMNS,
    books_from_values,
    books_params,
    settlement_params,
    update_books_sql,
)
from router_service.schemas import Budget


class Known(NamedTuple):
    """A task's books as last seen stored: the budget's text (compared too: a purged task's id
    may be opened again), the budget, whether closed, and the ``BOOK_COLUMNS`` values."""

    budget_text: str
    budget: Budget
    closed: bool
    values: tuple[Any, ...]

    def books(self) -> TaskBooks:
        return books_from_values(self.budget, self.closed, self.values)


def settle_if_params(
    settlement: Settlement, known: Known, books: TaskBooks, now: float
) -> tuple[Any, ...]:
    r = settlement.reservation
    return (
        r.task_id,
        known.budget_text,
        *known.values,
        r.decision_id,
        *settlement_params(settlement, now),
        *books_params(r.task_id, books, None),
        r.decision_id,
        r.task_id,
    )


def marks(columns: str) -> str:
    return ", ".join(["?"] * len(columns.split(",")))


def prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


AS_KNOWN = f"(budget, {BOOK_COLUMNS}) IS NOT DISTINCT FROM (?, {marks(BOOK_COLUMNS)})"
UPDATE_BOOKS_IF = f"{update_books_sql(None)} AND closed_at IS NULL AND {AS_KNOWN} RETURNING task_id"
INSERT_RESERVATION_IF = (
    f"INSERT INTO ledger_reservations ({RESERVATION_COLUMNS}) "
    f"SELECT {marks(RESERVATION_COLUMNS)} FROM kept"
)
INSERT_DECISION_IF = (
    f"INSERT INTO ledger_decisions ({REF_COLUMNS}, is_step, packed) "
    f"SELECT {marks(REF_COLUMNS)}, ?, ? FROM kept"
)
# One row: whether ``kept`` wrote; if not, the books as the statement's snapshot holds them
# (all NULL if the task is gone).
BOOKS_UNLESS_KEPT = (
    f"SELECT k.n, t.budget, t.closed_at, {prefixed('t', BOOK_COLUMNS)} "
    "FROM (SELECT count(*) AS n FROM kept) k "
    "LEFT JOIN ledger_tasks t ON k.n = 0 AND t.task_id = ?"
)
SETTLED_SQL = "SELECT expired FROM ledger_settlements WHERE decision_id = ?"
RESERVATION_AND_BOOKS = (
    f"SELECT {prefixed('r', RESERVATION_COLUMNS)}, t.budget, t.closed_at, "
    f"{prefixed('t', BOOK_COLUMNS)} "
    "FROM ledger_reservations r JOIN ledger_tasks t ON t.task_id = r.task_id "
    "WHERE r.decision_id = ?"
)
# The task's row is locked only if its books are as known; the reservation is deleted only
# under that lock, and the settlement and the books are written only with that deletion.
SETTLE_IF = (
    f"WITH locked AS MATERIALIZED (SELECT task_id FROM ledger_tasks WHERE task_id = ? "
    f"AND {AS_KNOWN} FOR UPDATE), "
    "gone AS (DELETE FROM ledger_reservations WHERE decision_id = ? "
    "AND task_id IN (SELECT task_id FROM locked) RETURNING decision_id), "
    f"booked AS ({INSERT_SETTLEMENT.split(' VALUES ')[0]} "
    f"SELECT {marks(SETTLEMENT_COLUMNS)} FROM gone), "
    f"kept AS ({update_books_sql(None)} AND EXISTS (SELECT 1 FROM gone) RETURNING task_id) "
    f"SELECT g.n, t.budget, t.closed_at, {prefixed('t', BOOK_COLUMNS)}, "
    "EXISTS (SELECT 1 FROM ledger_reservations WHERE decision_id = ?) "
    "FROM (SELECT count(*) AS n FROM gone) g "
    "LEFT JOIN ledger_tasks t ON g.n = 0 AND t.task_id = ?"
)
