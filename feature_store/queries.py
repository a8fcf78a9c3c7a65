"""Summaries for a dashboard: plain SQL over the store's tables, returning plain dicts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb

from feature_store.schema import from_utc_naive


def _dicts(result: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [column[0] for column in result.description]
    return [
        {
            name: from_utc_naive(value) if isinstance(value, datetime) else value
            for name, value in zip(names, row, strict=True)
        }
        for row in result.fetchall()
    ]


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


_SPEND_BY_TASK = """
SELECT o.task_id, any_value(o.trust_domain) AS trust_domain,
       sum(o.cost_dollars) AS spent_dollars, count(*) AS steps,
       count(*) FILTER (WHERE o.success) AS successful_steps,
       min(o.occurred_at) AS first_at, max(o.occurred_at) AS last_at,
       any_value(t.total_dollars) AS total_dollars,
       any_value(t.success) AS task_success
FROM outcomes o LEFT JOIN tasks t USING (task_id)
{where}
GROUP BY o.task_id
ORDER BY spent_dollars DESC, o.task_id
{limit}
"""


def spend_by_task(con: duckdb.DuckDBPyConnection, limit: int) -> list[dict[str, Any]]:
    """Tasks by money spent on their steps, most first, with the task result once closed."""
    _positive("limit", limit)
    sql = _SPEND_BY_TASK.format(where="", limit="LIMIT $limit")
    return _dicts(con.execute(sql, {"limit": limit}))


def spend_of_tasks(
    con: duckdb.DuckDBPyConnection, task_ids_sql: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """``spend_by_task``'s rows, all of them, for the tasks the ``task_ids_sql`` query selects."""
    sql = _SPEND_BY_TASK.format(where=f"WHERE o.task_id IN ({task_ids_sql})", limit="")
    return _dicts(con.execute(sql, params))


def spend_by_domain(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Money spent, steps, tasks and step success rate per trust domain."""
    return _dicts(
        con.execute(
            """
            SELECT trust_domain, sum(cost_dollars) AS spent_dollars, count(*) AS steps,
                   count(DISTINCT task_id) AS tasks, avg(success::DOUBLE) AS success_rate
            FROM outcomes
            GROUP BY trust_domain
            ORDER BY spent_dollars DESC, trust_domain
            """
        )
    )


def model_mix(con: duckdb.DuckDBPyConnection, bucket_minutes: int) -> list[dict[str, Any]]:
    """Decisions per model in each time bucket, with the model's share of the bucket."""
    _positive("bucket_minutes", bucket_minutes)
    return _dicts(
        con.execute(
            """
            WITH bucketed AS (
                SELECT time_bucket(to_minutes($minutes), occurred_at) AS bucket, model
                FROM decisions
            )
            SELECT bucket, model, count(*) AS decisions,
                   count(*) / sum(count(*)) OVER (PARTITION BY bucket) AS share
            FROM bucketed
            GROUP BY bucket, model
            ORDER BY bucket, decisions DESC, model
            """,
            {"minutes": bucket_minutes},
        )
    )


def success_by_model_and_kind(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Step success rate, mean quality and mean cost per (model, step kind)."""
    return _dicts(
        con.execute(
            """
            SELECT model, step_kind, count(*) AS steps, avg(success::DOUBLE) AS success_rate,
                   avg(quality) AS mean_quality, avg(cost_dollars) AS mean_cost_dollars
            FROM outcomes
            GROUP BY model, step_kind
            ORDER BY model, step_kind
            """
        )
    )


def recent_decisions(
    con: duckdb.DuckDBPyConnection, limit: int, search: str | None
) -> list[dict[str, Any]]:
    """The latest decisions with their outcome; ``search`` matches ids, model, step, domain."""
    _positive("limit", limit)
    return _dicts(
        con.execute(
            """
            SELECT d.decision_id, d.task_id, d.occurred_at, d.trust_domain, d.step_kind,
                   d.step_type, d.model, d.propensity, d.governor_action, d.policy_version,
                   o.success, o.quality, o.cost_dollars
            FROM decisions d LEFT JOIN outcomes o USING (decision_id)
            WHERE $search IS NULL
               OR contains(
                    lower(concat_ws(' ', d.decision_id, d.task_id, d.model, d.step_kind,
                                    d.step_type, d.trust_domain, d.policy_version)),
                    lower($search))
            ORDER BY d.occurred_at DESC, d.decision_id DESC
            LIMIT $limit
            """,
            {"limit": limit, "search": search},
        )
    )
