"""DuckDB tables of the feature store and the Arrow columns that fill them.

Timestamps are stored as naive ``TIMESTAMP`` in UTC (events carry aware datetimes; naive ones
are taken as UTC). Decisions keep the whole event: scalar fields as columns, the action list,
pmf and estimated costs as native lists, the feature namespaces as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from operator import attrgetter

import orjson
import pyarrow as pa

from router_service.events import CorrectionEvent, DecisionEvent, OutcomeEvent, TaskClosedEvent

SCHEMA_VERSION = 1
JSON_COLUMNS = frozenset({"shared_features", "action_features"})

DDL = """
CREATE TABLE IF NOT EXISTS store_meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    decision_id VARCHAR PRIMARY KEY,
    event_id VARCHAR NOT NULL UNIQUE,
    schema_version INTEGER NOT NULL,
    task_id VARCHAR NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    trust_domain VARCHAR NOT NULL,
    task_type VARCHAR NOT NULL,
    step_kind VARCHAR NOT NULL,
    step_type VARCHAR NOT NULL,
    input_tokens BIGINT NOT NULL,
    expected_output_tokens BIGINT NOT NULL,
    granted_max_output_tokens BIGINT NOT NULL,
    optional BOOLEAN NOT NULL,
    model VARCHAR NOT NULL,
    chosen_index INTEGER NOT NULL,
    propensity DOUBLE NOT NULL,
    policy_version VARCHAR NOT NULL,
    governor_action VARCHAR NOT NULL,
    reserved_dollars DOUBLE NOT NULL,
    actions VARCHAR[] NOT NULL,
    pmf DOUBLE[] NOT NULL,
    estimated_costs DOUBLE[] NOT NULL,
    shared_features JSON NOT NULL,
    action_features JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS outcomes (
    decision_id VARCHAR PRIMARY KEY,
    event_id VARCHAR NOT NULL UNIQUE,
    schema_version INTEGER NOT NULL,
    task_id VARCHAR NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    model VARCHAR NOT NULL,
    step_kind VARCHAR NOT NULL,
    step_type VARCHAR NOT NULL,
    trust_domain VARCHAR NOT NULL,
    success BOOLEAN NOT NULL,
    quality DOUBLE NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cost_dollars DOUBLE NOT NULL,
    latency_ms DOUBLE,
    error VARCHAR,
    exceeded_grant BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS corrections (
    event_id VARCHAR PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    task_id VARCHAR NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    decision_id VARCHAR,
    preferred_model VARCHAR,
    rating VARCHAR,
    note VARCHAR
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id VARCHAR PRIMARY KEY,
    event_id VARCHAR NOT NULL UNIQUE,
    schema_version INTEGER NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    trust_domain VARCHAR NOT NULL,
    success BOOLEAN NOT NULL,
    quality DOUBLE NOT NULL,
    spent_dollars DOUBLE NOT NULL,
    total_dollars DOUBLE NOT NULL,
    steps INTEGER NOT NULL,
    decision_ids VARCHAR[] NOT NULL
);
"""

_TS = pa.timestamp("us")
_STR = pa.string()
_F64 = pa.float64()
_I64 = pa.int64()
_I32 = pa.int32()
_BOOL = pa.bool_()

DECISION_SCHEMA = pa.schema(
    [
        ("decision_id", _STR),
        ("event_id", _STR),
        ("schema_version", _I32),
        ("task_id", _STR),
        ("occurred_at", _TS),
        ("trust_domain", _STR),
        ("task_type", _STR),
        ("step_kind", _STR),
        ("step_type", _STR),
        ("input_tokens", _I64),
        ("expected_output_tokens", _I64),
        ("granted_max_output_tokens", _I64),
        ("optional", _BOOL),
        ("model", _STR),
        ("chosen_index", _I32),
        ("propensity", _F64),
        ("policy_version", _STR),
        ("governor_action", _STR),
        ("reserved_dollars", _F64),
        ("actions", pa.list_(_STR)),
        ("pmf", pa.list_(_F64)),
        ("estimated_costs", pa.list_(_F64)),
        ("shared_features", _STR),
        ("action_features", _STR),
    ]
)
OUTCOME_SCHEMA = pa.schema(
    [
        ("decision_id", _STR),
        ("event_id", _STR),
        ("schema_version", _I32),
        ("task_id", _STR),
        ("occurred_at", _TS),
        ("model", _STR),
        ("step_kind", _STR),
        ("step_type", _STR),
        ("trust_domain", _STR),
        ("success", _BOOL),
        ("quality", _F64),
        ("input_tokens", _I64),
        ("output_tokens", _I64),
        ("cached_input_tokens", _I64),
        ("cost_dollars", _F64),
        ("latency_ms", _F64),
        ("error", _STR),
        ("exceeded_grant", _BOOL),
    ]
)
CORRECTION_SCHEMA = pa.schema(
    [
        ("event_id", _STR),
        ("schema_version", _I32),
        ("task_id", _STR),
        ("occurred_at", _TS),
        ("decision_id", _STR),
        ("preferred_model", _STR),
        ("rating", _STR),
        ("note", _STR),
    ]
)
TASK_SCHEMA = pa.schema(
    [
        ("task_id", _STR),
        ("event_id", _STR),
        ("schema_version", _I32),
        ("occurred_at", _TS),
        ("trust_domain", _STR),
        ("success", _BOOL),
        ("quality", _F64),
        ("spent_dollars", _F64),
        ("total_dollars", _F64),
        ("steps", _I32),
        ("decision_ids", pa.list_(_STR)),
    ]
)


def to_utc_naive(moment: datetime) -> datetime:
    """The UTC wall time of ``moment`` without tzinfo, as stored (naive input is taken as UTC)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def from_utc_naive(moment: datetime) -> datetime:
    """A stored naive UTC timestamp as an aware datetime."""
    return moment.replace(tzinfo=UTC)


def _table(schema: pa.Schema, events: Sequence[object]) -> pa.Table:
    """``events`` as columns named like their attributes: no tuple per row.

    Aware timestamps go to Arrow as they are (it converts them to UTC wall time, as
    :func:`to_utc_naive` does); JSON columns are dumped to bytes and cast to strings in C.
    """
    arrays = []
    for column in schema:
        values = list(map(attrgetter(column.name), events))
        if column.name in JSON_COLUMNS:
            dumped = pa.array(list(map(orjson.dumps, values)), type=pa.binary())
            arrays.append(dumped.cast(column.type))
        else:
            arrays.append(pa.array(values, type=column.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def decisions_table(events: Sequence[DecisionEvent]) -> pa.Table:
    """Decision events as an Arrow table in the column order of ``decisions``."""
    return _table(DECISION_SCHEMA, events)


def outcomes_table(events: Sequence[OutcomeEvent]) -> pa.Table:
    """Outcome events as an Arrow table in the column order of ``outcomes``."""
    return _table(OUTCOME_SCHEMA, events)


def corrections_table(events: Sequence[CorrectionEvent]) -> pa.Table:
    """Correction events as an Arrow table in the column order of ``corrections``."""
    return _table(CORRECTION_SCHEMA, events)


def tasks_table(events: Sequence[TaskClosedEvent]) -> pa.Table:
    """Task-closed events as an Arrow table in the column order of ``tasks``."""
    return _table(TASK_SCHEMA, events)
