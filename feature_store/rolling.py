"""Rolling per-(model, step_type, trust_domain) features over the last N outcomes.

The window is a count, not a time span: the last ``window`` outcomes of each key. A count
keeps the noise of every rate bounded the same way for busy and rare keys, and a rarely used
model still has a record the router can use; staleness is visible in ``last_outcome_at``.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from datetime import datetime

import duckdb

from feature_store.schema import from_utc_naive
from feature_store.snapshot import FeatureKey, RollingFeature

DEFAULT_WINDOW = 100


@dataclass(frozen=True)
class RollingWindow:
    """How many of the most recent outcomes per key the rolling features average over."""

    outcomes: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if self.outcomes < 1:
            raise ValueError(f"rolling window outcomes must be >= 1, got {self.outcomes}")


# The last ``$window`` outcomes of each key among the rows in (``$after``, ``$upto``] of the
# table, with how many rows each key has there.
_NEWEST_SQL = """
SELECT model, step_type, trust_domain, occurred_at, event_id, success, quality, cost_dollars,
       latency_ms, n_rows
FROM (
    SELECT
        model, step_type, trust_domain, occurred_at, event_id, success, quality, cost_dollars,
        latency_ms,
        row_number() OVER (
            PARTITION BY model, step_type, trust_domain
            ORDER BY occurred_at DESC, event_id DESC
        ) AS recency,
        count(*) OVER (PARTITION BY model, step_type, trust_domain) AS n_rows
    FROM outcomes
    WHERE rowid > $after AND rowid <= $upto
)
WHERE recency <= $window
"""

# (occurred_at, event_id, success, quality, cost_dollars, latency_ms): newest is largest.
_Outcome = tuple[datetime, str, bool, float, float, float | None]


class RollingFeatures:
    """The rolling features of one store, brought up to date from the rows added since.

    Outcomes are only ever appended, so a key's last ``window`` outcomes are among the ones it
    had and the rows added since: each :meth:`update` reads only the rows past the last row id
    it saw, not the whole table (ranking all of it, every publication, grew with the store).
    """

    def __init__(self, window: RollingWindow) -> None:
        self.window = window
        self._seen_rowid = -1
        self._newest: dict[FeatureKey, list[_Outcome]] = {}  # min-heaps of ``window`` outcomes
        self._totals: dict[FeatureKey, int] = {}
        self._features: dict[FeatureKey, RollingFeature] = {}

    def update(self, con: duckdb.DuckDBPyConnection) -> list[RollingFeature]:
        """Read the rows added since the last call; the features of every key with an outcome."""
        ((upto,),) = con.execute("SELECT coalesce(max(rowid), -1) FROM outcomes").fetchall()
        if upto > self._seen_rowid:
            params = {"after": self._seen_rowid, "upto": upto, "window": self.window.outcomes}
            changed: set[FeatureKey] = set()
            for model, step_type, domain, *outcome, n_rows in con.execute(
                _NEWEST_SQL, params
            ).fetchall():
                key = (model, step_type, domain)
                if key not in changed:
                    changed.add(key)
                    self._totals[key] = self._totals.get(key, 0) + n_rows
                self._keep(key, tuple(outcome))  # type: ignore[arg-type]
            for key in changed:
                self._features[key] = self._feature(key)
            self._seen_rowid = upto
        return [self._features[key] for key in sorted(self._features)]

    def _keep(self, key: FeatureKey, outcome: _Outcome) -> None:
        newest = self._newest.setdefault(key, [])
        if len(newest) < self.window.outcomes:
            heapq.heappush(newest, outcome)
        else:
            heapq.heappushpop(newest, outcome)

    def _feature(self, key: FeatureKey) -> RollingFeature:
        newest = self._newest[key]
        n = len(newest)
        successes = sum(1 for outcome in newest if outcome[2])
        latencies = [outcome[5] for outcome in newest if outcome[5] is not None]
        return RollingFeature(
            model=key[0],
            step_type=key[1],
            trust_domain=key[2],
            n=n,
            successes=successes,
            success_rate=successes / n,
            # fsum: exactly rounded, so the means do not depend on the heap's order
            mean_quality=math.fsum(outcome[3] for outcome in newest) / n,
            mean_cost_dollars=math.fsum(outcome[4] for outcome in newest) / n,
            mean_latency_s=math.fsum(latencies) / len(latencies) / 1000 if latencies else None,
            n_total=self._totals[key],
            last_outcome_at=from_utc_naive(max(newest)[0]),
            window=self.window.outcomes,
        )
