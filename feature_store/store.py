"""The DuckDB feature store: the learner is its single writer, one transaction per batch."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow.parquet as pq

from feature_store import queries
from feature_store.batch import AnyStoredEvent, BatchPlan, ExistingKeys, WriteResult, plan_batch
from feature_store.errors import (
    FeatureStoreError,
    StoreSchemaError,
    StoreUnavailable,
    StoreWriteError,
)
from feature_store.logged import LoggedStep
from feature_store.rolling import RollingFeatures, RollingWindow
from feature_store.schema import (
    DDL,
    SCHEMA_VERSION,
    corrections_table,
    decisions_table,
    outcomes_table,
    tasks_table,
    to_utc_naive,
)
from feature_store.snapshot import RollingFeature, atomic_path, write_rolling_snapshot

_TABLES = {
    "decision": "decisions",
    "outcome": "outcomes",
    "correction": "corrections",
    "task_closed": "tasks",
}

# DuckDB's buffer pool caches table blocks up to 80% of the machine's memory by default; a cap
# keeps a long-running process's RSS from growing with the file (queries spill past it). The
# learner sets its own (LearnerSettings.feature_store_memory_limit).
DEFAULT_MEMORY_LIMIT = "256MB"

_LOGGED_SQL = """
SELECT
    d.decision_id, d.task_id, d.trust_domain, d.step_kind, d.step_type, d.policy_version,
    d.actions, d.pmf, d.chosen_index, d.propensity, d.shared_features, d.action_features,
    d.estimated_costs, o.success, o.quality, o.cost_dollars, t.success AS task_success,
    d.occurred_at AS decided_at, o.occurred_at AS outcome_at, d.model
FROM decisions d
JOIN outcomes o USING (decision_id)
LEFT JOIN tasks t ON t.task_id = d.task_id
WHERE ($since IS NULL OR d.occurred_at >= $since)
  AND ($until IS NULL OR d.occurred_at < $until)
  AND ($trust_domain IS NULL OR d.trust_domain = $trust_domain)
  AND ($policy_version IS NULL OR d.policy_version = $policy_version)
ORDER BY d.occurred_at, d.decision_id
LIMIT $limit
"""
NO_LIMIT = 2**62

_LOGGED_COUNT_SQL = f"SELECT count(*) FROM ({_LOGGED_SQL})"
_LOGGED_TASKS_SQL = f"SELECT DISTINCT task_id FROM ({_LOGGED_SQL})"


class DuckDBFeatureStore:
    """Decisions, outcomes, corrections and task results in one DuckDB file."""

    def __init__(
        self,
        path: Path,
        *,
        window: RollingWindow | None = None,
        read_only: bool = False,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        self.path = Path(path)
        self.window = window or RollingWindow()
        self._rolling = RollingFeatures(self.window)
        self._lock = threading.Lock()
        try:
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(
                str(self.path), read_only=read_only, config={"memory_limit": memory_limit}
            )
        except (duckdb.IOException, OSError) as exc:
            raise StoreUnavailable(f"cannot open feature store {self.path}: {exc}") from exc
        except duckdb.Error as exc:
            raise FeatureStoreError(
                f"cannot open feature store {self.path} with memory_limit {memory_limit!r}: {exc}"
            ) from exc
        try:
            if not read_only:
                self._con.execute(DDL)
                self._con.execute(
                    "INSERT INTO store_meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                    [str(SCHEMA_VERSION)],
                )
            self._check_schema()
        except Exception:
            self._con.close()
            raise

    def _check_schema(self) -> None:
        rows = self._con.execute(
            "SELECT value FROM store_meta WHERE key = 'schema_version'"
        ).fetchall()  # fetchall: fetchone would leave the result open for the next query
        row = rows[0] if rows else None
        if row is None or row[0] != str(SCHEMA_VERSION):
            found = None if row is None else row[0]
            raise StoreSchemaError(
                f"feature store {self.path} has schema_version {found!r}, "
                f"expected {SCHEMA_VERSION!r}"
            )

    def close(self) -> None:
        """Close the DuckDB connection (checkpointing the write-ahead log)."""
        with self._lock:
            self._con.close()

    def __enter__(self) -> DuckDBFeatureStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write_events(self, events: Sequence[AnyStoredEvent]) -> WriteResult:
        """Write a batch in one committed transaction; redeliveries change nothing.

        The common batch holds only new events, so it is inserted without looking anything
        up and the unique keys catch the rest; on a conflict the transaction is rolled back
        and the batch is planned again against the keys already stored.
        """
        if not events:
            return WriteResult(0, 0)
        with self._lock:
            try:
                try:
                    plan = self._write(events, look_up=False)
                except duckdb.ConstraintException:
                    plan = self._write(events, look_up=True)
            except duckdb.IOException as exc:
                raise StoreUnavailable(f"writing to {self.path} failed: {exc}") from exc
            except duckdb.Error as exc:
                raise StoreWriteError(f"writing to {self.path} failed: {exc}") from exc
        return plan.result()

    def _write(self, events: Sequence[AnyStoredEvent], *, look_up: bool) -> BatchPlan:
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            plan = plan_batch(events, self._existing(events) if look_up else ExistingKeys())
            for table, rows in (
                ("decisions", decisions_table(plan.decisions)),
                ("outcomes", outcomes_table(plan.outcomes)),
                ("corrections", corrections_table(plan.corrections)),
                ("tasks", tasks_table(plan.tasks)),
            ):
                if rows.num_rows:
                    con.from_arrow(rows).insert_into(table)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # COMMIT may have ended it already
                con.execute("ROLLBACK")
            raise
        return plan

    def _existing(self, events: Sequence[AnyStoredEvent]) -> ExistingKeys:
        stored: set[tuple[str, str]] = set()
        for event_type, table in _TABLES.items():
            ids = [e.event_id for e in events if e.type == event_type]
            if ids:
                rows = self._con.execute(
                    f"SELECT event_id FROM {table} WHERE event_id IN (SELECT unnest($ids))",
                    {"ids": ids},
                ).fetchall()
                stored.update((event_type, r[0]) for r in rows)
        decision_ids = sorted({e.decision_id for e in events if e.type in ("decision", "outcome")})
        task_ids = sorted({e.task_id for e in events if e.type == "task_closed"})

        def owners(table: str, key: str, keys: list[str]) -> dict[str, str]:
            if not keys:
                return {}
            sql = f"SELECT {key}, event_id FROM {table} WHERE {key} IN (SELECT unnest($keys))"
            return dict(self._con.execute(sql, {"keys": keys}).fetchall())

        return ExistingKeys(
            event_ids=frozenset(stored),
            decision_owner=owners("decisions", "decision_id", decision_ids),
            outcome_owner=owners("outcomes", "decision_id", decision_ids),
            task_owner=owners("tasks", "task_id", task_ids),
        )

    def counts(self) -> dict[str, int]:
        """Row count of every event table."""
        with self._lock:
            return {
                table: self._con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("decisions", "outcomes", "corrections", "tasks")
            }

    def rolling_features(self) -> list[RollingFeature]:
        """Per-(model, step_type, trust_domain) features over the last ``window`` outcomes."""
        with self._lock:
            return self._rolling.update(self._con)

    def export_rolling_features(self, path: Path) -> int:
        """Write the rolling-feature snapshot (JSON) atomically; return how many keys it holds."""
        features = self.rolling_features()
        write_rolling_snapshot(features, Path(path))
        return len(features)

    @staticmethod
    def _logged_params(
        since: datetime | None,
        until: datetime | None,
        trust_domain: str | None,
        policy_version: str | None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        return {
            "limit": NO_LIMIT if limit is None else limit,
            "since": None if since is None else to_utc_naive(since),
            "until": None if until is None else to_utc_naive(until),
            "trust_domain": trust_domain,
            "policy_version": policy_version,
        }

    def logged_step_count(self, since: datetime | None = None) -> int:
        """How many steps ``logged_steps(since)`` would return, without reading them."""
        with self._lock:
            params = self._logged_params(since, None, None, None)
            (count,) = self._con.execute(_LOGGED_COUNT_SQL, params).fetchone()
        return int(count)

    def logged_steps(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        trust_domain: str | None = None,
        policy_version: str | None = None,
        *,
        limit: int | None = None,
    ) -> list[LoggedStep]:
        """Decisions joined with their outcomes (and task success when closed), by time.

        ``since`` is inclusive, ``until`` exclusive; decisions without an outcome are left out.
        With ``limit``, only the first ``limit`` of them.
        """
        with self._lock:
            params = self._logged_params(since, until, trust_domain, policy_version, limit)
            rows = self._con.execute(_LOGGED_SQL, params).fetchall()
        return [
            LoggedStep(
                decision_id=r[0],
                task_id=r[1],
                trust_domain=r[2],
                step_kind=r[3],
                step_type=r[4],
                policy_version=r[5],
                actions=list(r[6]),
                pmf=list(r[7]),
                chosen_index=r[8],
                propensity=r[9],
                shared_features=json.loads(r[10]),
                action_features=json.loads(r[11]),
                estimated_costs=list(r[12]),
                success=r[13],
                quality=r[14],
                cost_dollars=r[15],
                task_success=r[16],
            )
            for r in rows
        ]

    def export_logged_steps(
        self,
        path: Path,
        since: datetime | None = None,
        until: datetime | None = None,
        trust_domain: str | None = None,
        policy_version: str | None = None,
    ) -> int:
        """Write the logged steps to Parquet atomically (features as JSON text); return rows."""
        with self._lock:
            params = self._logged_params(since, until, trust_domain, policy_version)
            table = self._con.sql(_LOGGED_SQL, params=params).to_arrow_table()
        try:
            with atomic_path(Path(path)) as tmp:
                pq.write_table(table, tmp)
        except OSError as exc:
            raise FeatureStoreError(f"cannot write logged steps to {path}: {exc}") from exc
        return table.num_rows

    def spend_by_task(self, limit: int = 50) -> list[dict[str, Any]]:
        """Tasks by money spent, most first."""
        with self._lock:
            return queries.spend_by_task(self._con, limit)

    def spend_of_logged_tasks(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        trust_domain: str | None = None,
        policy_version: str | None = None,
        *,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """``spend_by_task``'s rows for the tasks with a step ``logged_steps`` would return."""
        with self._lock:
            params = self._logged_params(since, until, trust_domain, policy_version, limit)
            return queries.spend_of_tasks(self._con, _LOGGED_TASKS_SQL, params)

    def spend_by_domain(self) -> list[dict[str, Any]]:
        """Money spent and success per trust domain."""
        with self._lock:
            return queries.spend_by_domain(self._con)

    def model_mix(self, bucket_minutes: int = 60) -> list[dict[str, Any]]:
        """Share of decisions per model in each time bucket."""
        with self._lock:
            return queries.model_mix(self._con, bucket_minutes)

    def success_by_model_and_kind(self) -> list[dict[str, Any]]:
        """Success rate, quality and cost per (model, step kind)."""
        with self._lock:
            return queries.success_by_model_and_kind(self._con)

    def recent_decisions(self, limit: int = 50, search: str | None = None) -> list[dict[str, Any]]:
        """The latest decisions with their outcome, optionally filtered by a search string."""
        with self._lock:
            return queries.recent_decisions(self._con, limit, search)
