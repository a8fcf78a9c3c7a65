"""Rolling per-(model, step_type, trust_domain) features over the last N outcomes.

The window is a count, not a time span: the last ``window`` outcomes of each key. A count
keeps the noise of every rate bounded the same way for busy and rare keys, and a rarely used
model still has a record the router can use; staleness is visible in ``last_outcome_at``.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from feature_store.schema import from_utc_naive
from feature_store.snapshot import RollingFeature

DEFAULT_WINDOW = 100


@dataclass(frozen=True)
class RollingWindow:
    """How many of the most recent outcomes per key the rolling features average over."""

    outcomes: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if self.outcomes < 1:
            raise ValueError(f"rolling window outcomes must be >= 1, got {self.outcomes}")


_SQL = """
WITH ranked AS (
    SELECT
        model, step_type, trust_domain, success, quality, cost_dollars, latency_ms, occurred_at,
        row_number() OVER (
            PARTITION BY model, step_type, trust_domain
            ORDER BY occurred_at DESC, event_id DESC
        ) AS recency,
        count(*) OVER (PARTITION BY model, step_type, trust_domain) AS n_total
    FROM outcomes
)
SELECT
    model,
    step_type,
    trust_domain,
    count(*) AS n,
    count(*) FILTER (WHERE success) AS successes,
    avg(quality) AS mean_quality,
    avg(cost_dollars) AS mean_cost_dollars,
    avg(latency_ms) / 1000.0 AS mean_latency_s,
    max(n_total) AS n_total,
    max(occurred_at) AS last_outcome_at
FROM ranked
WHERE recency <= $window
GROUP BY model, step_type, trust_domain
ORDER BY model, step_type, trust_domain
"""


def query_rolling_features(
    con: duckdb.DuckDBPyConnection, window: RollingWindow
) -> list[RollingFeature]:
    """Compute the rolling features of every key that has at least one outcome."""
    rows = con.execute(_SQL, {"window": window.outcomes}).fetchall()
    return [
        RollingFeature(
            model=model,
            step_type=step_type,
            trust_domain=domain,
            n=n,
            successes=successes,
            success_rate=successes / n,
            mean_quality=mean_quality,
            mean_cost_dollars=mean_cost,
            mean_latency_s=mean_latency,
            n_total=n_total,
            last_outcome_at=from_utc_naive(last_at),
            window=window.outcomes,
        )
        for (
            model,
            step_type,
            domain,
            n,
            successes,
            mean_quality,
            mean_cost,
            mean_latency,
            n_total,
            last_at,
        ) in rows
    ]
