"""The ledger's SQL tables, shared by the SQLite and PostgreSQL stores, and their row codecs."""

from __future__ import annotations

import json
import math
from typing import Any

from router_service.ledger import Reservation, Settlement, TaskBooks
from router_service.schemas import Budget

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_tasks (
    task_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    trust_domain TEXT NOT NULL,
    task_type TEXT NOT NULL,
    budget TEXT NOT NULL,
    planned_steps INTEGER,
    tags TEXT NOT NULL,
    created_at TEXT NOT NULL,
    closed_at DOUBLE PRECISION,
    spent_dollars DOUBLE PRECISION NOT NULL DEFAULT 0,
    input_tokens_used BIGINT NOT NULL DEFAULT 0,
    output_tokens_used BIGINT NOT NULL DEFAULT 0,
    retries_used INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    committed_by_kind TEXT NOT NULL DEFAULT '{{}}',
    reserved_dollars DOUBLE PRECISION NOT NULL DEFAULT 0,
    reserved_input_tokens BIGINT NOT NULL DEFAULT 0,
    reserved_output_tokens BIGINT NOT NULL DEFAULT 0,
    open_reservations INTEGER NOT NULL DEFAULT 0,
    next_expiry DOUBLE PRECISION
){without_rowid};
CREATE INDEX IF NOT EXISTS ledger_tasks_closed ON ledger_tasks (closed_at);
CREATE TABLE IF NOT EXISTS ledger_reservations (
    decision_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    model TEXT NOT NULL,
    step_kind TEXT NOT NULL,
    dollars DOUBLE PRECISION NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    is_retry INTEGER NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
){without_rowid};
CREATE INDEX IF NOT EXISTS ledger_reservations_task ON ledger_reservations (task_id, expires_at);
CREATE TABLE IF NOT EXISTS ledger_settlements (
    decision_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    expired INTEGER NOT NULL,
    reserved_dollars DOUBLE PRECISION NOT NULL,
    cost_dollars DOUBLE PRECISION NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    settled_at DOUBLE PRECISION NOT NULL
){without_rowid};
CREATE INDEX IF NOT EXISTS ledger_settlements_task ON ledger_settlements (task_id);
CREATE TABLE IF NOT EXISTS ledger_decisions (
    seq {serial} PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL,
    model TEXT,
    action TEXT NOT NULL,
    step_kind TEXT NOT NULL,
    step_type TEXT NOT NULL,
    max_output_tokens INTEGER NOT NULL,
    reserved_dollars DOUBLE PRECISION NOT NULL,
    is_step INTEGER NOT NULL,
    packed {blob} NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_decisions_task ON ledger_decisions (task_id, seq);
"""

BOOK_COLUMNS = (
    "spent_dollars, input_tokens_used, output_tokens_used, retries_used, steps, "
    "committed_by_kind, reserved_dollars, reserved_input_tokens, reserved_output_tokens, "
    "open_reservations, next_expiry"
)
TASK_COLUMNS = "tenant, trust_domain, task_type, budget, planned_steps, tags, created_at"
RESERVATION_COLUMNS = (
    "decision_id, task_id, model, step_kind, dollars, input_tokens, output_tokens, is_retry, "
    "expires_at"
)
REF_COLUMNS = (
    "decision_id, task_id, model, action, step_kind, step_type, max_output_tokens, reserved_dollars"
)
PURGE_BATCH = 500


def reservation_from_row(row: tuple[Any, ...]) -> Reservation:
    decision_id, task_id, model, kind, dollars, tokens_in, tokens_out, retry, expires = row
    return Reservation(
        decision_id, task_id, model, kind, dollars, tokens_in, tokens_out, bool(retry), expires
    )


INSERT_RESERVATION = (
    f"INSERT INTO ledger_reservations ({RESERVATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SETTLEMENT_COLUMNS = (
    "decision_id, task_id, expired, reserved_dollars, cost_dollars, input_tokens, "
    "output_tokens, settled_at"
)
INSERT_SETTLEMENT = (
    f"INSERT INTO ledger_settlements ({SETTLEMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def update_books_sql(closed_at: float | None) -> str:
    closing = ", closed_at = ?" if closed_at is not None else ""
    return (
        "UPDATE ledger_tasks SET spent_dollars = ?, input_tokens_used = ?, "
        "output_tokens_used = ?, retries_used = ?, steps = ?, committed_by_kind = ?, "
        "reserved_dollars = ?, reserved_input_tokens = ?, reserved_output_tokens = ?, "
        f"open_reservations = ?, next_expiry = ?{closing} WHERE task_id = ?"
    )


def book_values(books: TaskBooks) -> tuple[Any, ...]:
    """The books as their ``BOOK_COLUMNS`` store them."""
    return (
        books.spent_dollars,
        books.input_tokens_used,
        books.output_tokens_used,
        books.retries_used,
        books.steps,
        json.dumps(books.committed_by_kind),
        books.reserved_dollars,
        books.reserved_input_tokens,
        books.reserved_output_tokens,
        books.open_reservations,
        None if math.isinf(books.next_expiry) else books.next_expiry,
    )


def books_params(task_id: str, books: TaskBooks, closed_at: float | None) -> tuple[Any, ...]:
    closing = (closed_at,) if closed_at is not None else ()
    return (*book_values(books), *closing, task_id)


def reservation_params(r: Reservation) -> tuple[Any, ...]:
    return (
        r.decision_id,
        r.task_id,
        r.model,
        r.step_kind,
        r.dollars,
        r.input_tokens,
        r.output_tokens,
        int(r.is_retry),
        r.expires_at,
    )


def settlement_params(settlement: Settlement, now: float) -> tuple[Any, ...]:
    r = settlement.reservation
    return (
        r.decision_id,
        r.task_id,
        int(settlement.expired),
        r.dollars,
        settlement.cost_dollars,
        settlement.input_tokens,
        settlement.output_tokens,
        now,
    )


def books_from_row(row: tuple[Any, ...]) -> TaskBooks:
    """Books from ``budget, closed_at, {BOOK_COLUMNS}``."""
    return books_from_values(Budget.model_validate_json(row[0]), row[1] is not None, row[2:])


def books_from_values(budget: Budget, closed: bool, values: tuple[Any, ...]) -> TaskBooks:
    """Books from a budget and the values of ``BOOK_COLUMNS``."""
    spent, used_in, used_out, retries, steps, by_kind = values[:6]
    reserved, reserved_in, reserved_out, count, next_expiry = values[6:]
    return TaskBooks(
        budget=budget,
        spent_dollars=spent,
        input_tokens_used=used_in,
        output_tokens_used=used_out,
        retries_used=retries,
        steps=steps,
        closed=closed,
        committed_by_kind=json.loads(by_kind),
        reserved_dollars=reserved,
        reserved_input_tokens=reserved_in,
        reserved_output_tokens=reserved_out,
        open_reservations=count,
        next_expiry=math.inf if next_expiry is None else next_expiry,
    )
