"""Recent decisions, outcomes and task spend kept in memory for the operator dashboard.

A bounded ring buffer fed by the decide, outcome and close endpoints; every aggregation is
computed on request from a snapshot taken under the lock, so recording stays cheap.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from router_service.schemas import Decision, LedgerView, OutcomeReport, Task
from router_service.served import ServedDecision, unpack
from router_service.tasks import DecisionRef

NO_MODEL = "(no model)"
BUCKET_STEPS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400)


@dataclass(frozen=True)
class OutcomeRecord:
    """How one decided step went, as reported to the outcome endpoint."""

    success: bool
    quality: float
    cost_dollars: float
    latency_ms: float | None
    recorded_at: float


@dataclass(slots=True)
class DecisionRecord:
    """What the dashboard groups and searches by, and the full decision as compressed JSON."""

    decision_id: str
    task_id: str
    created_at: float
    model: str | None
    action: str
    step_kind: str
    propensity: float | None
    explored: bool | None
    reserved_dollars: float
    rules: tuple[str, ...]
    trust_domain: str
    task_type: str
    haystack: str
    payload: bytes
    tenant: str = "default"
    outcome: OutcomeRecord | None = None

    @classmethod
    def of(cls, decision: ServedDecision, task: Task) -> DecisionRecord:
        """Keep ``decision`` compactly: about 1 KB, its JSON compressed."""
        words = (decision.decision_id, decision.task_id, decision.model or NO_MODEL)
        words += (decision.action, task.trust_domain, decision.trust_domain)
        return cls(
            decision_id=decision.decision_id,
            task_id=decision.task_id,
            created_at=decision.created_at,
            model=decision.model,
            action=decision.action,
            step_kind=decision.step_kind,
            propensity=decision.propensity,
            explored=decision.explored,
            reserved_dollars=decision.reserved_dollars,
            rules=tuple(rule for rule, _ in decision.rules),
            trust_domain=task.trust_domain,
            task_type=task.task_type,
            haystack=" ".join(words).lower(),
            payload=decision.packed,
            tenant=task.tenant,
        )

    def decision_json(self) -> dict[str, Any]:
        """The decision exactly as the decide endpoint returned it."""
        return json.loads(unpack(self.payload))

    def load(self) -> Decision:
        """The decision as a ``Decision`` model."""
        return Decision.model_validate_json(unpack(self.payload))


@dataclass
class TaskSpend:
    """The latest known books of one task."""

    task_id: str
    trust_domain: str
    task_type: str
    total_dollars: float
    spent_dollars: float
    reserved_dollars: float
    status: str
    decisions: int
    updated_at: float
    tenant: str = "default"

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "trust_domain": self.trust_domain,
            "task_type": self.task_type,
            "total_dollars": self.total_dollars,
            "spent_dollars": self.spent_dollars,
            "reserved_dollars": self.reserved_dollars,
            "status": self.status,
            "decisions": self.decisions,
        }


class ActivityLog:
    """Thread-safe bounded log of recent decisions, outcomes and per-task spend."""

    def __init__(
        self,
        max_decisions: int = 20_000,
        max_tasks: int = 5_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_decisions < 1:
            raise ValueError(f"max_decisions must be at least 1, got {max_decisions}")
        if max_tasks < 1:
            raise ValueError(f"max_tasks must be at least 1, got {max_tasks}")
        self.max_decisions = max_decisions
        self.max_tasks = max_tasks
        self._clock = clock
        self._lock = threading.Lock()
        self._records: deque[DecisionRecord] = deque()
        self._by_id: dict[str, DecisionRecord] = {}
        self._tasks: OrderedDict[str, TaskSpend] = OrderedDict()
        self._outcomes = 0

    def record_decision(self, decision: Decision, task: Task) -> None:
        """``record`` for a ``Decision`` model."""
        self.record(ServedDecision.of(decision), task)

    def record(self, decision: ServedDecision, task: Task) -> None:
        """Log a decision and take the task's books from the ledger view it carries."""
        record = DecisionRecord.of(decision, task)
        with self._lock:
            if len(self._records) >= self.max_decisions:
                evicted = self._records.popleft()
                self._by_id.pop(evicted.decision_id, None)
            self._records.append(record)
            self._by_id[decision.decision_id] = record
            spend = self._task(task)
            spend.decisions += 1
            spend.status = task.status
            self._books(spend, decision.ledger)

    def record_outcome(
        self,
        decision: DecisionRef,
        outcome: OutcomeReport,
        cost_dollars: float,
        ledger: LedgerView | None = None,
    ) -> None:
        """Attach an outcome; book its cost, or take ``ledger`` as the books when given."""
        now = self._clock()
        with self._lock:
            record = self._by_id.get(decision.decision_id)
            repeated = record is not None and record.outcome is not None
            if record is not None:
                record.outcome = OutcomeRecord(
                    outcome.success, outcome.quality, cost_dollars, outcome.latency_ms, now
                )
            if not repeated:
                self._outcomes += 1
            spend = self._tasks.get(decision.task_id)
            if spend is None:
                return
            if ledger is not None:
                self._books(spend, ledger)
            elif not repeated:
                spend.spent_dollars += cost_dollars
                spend.reserved_dollars = max(
                    0.0, spend.reserved_dollars - decision.reserved_dollars
                )
                spend.updated_at = now

    def record_close(self, task: Task, ledger: LedgerView) -> None:
        """Mark a task closed with its final books."""
        with self._lock:
            spend = self._task(task)
            spend.status = "closed"
            self._books(spend, ledger)

    def _task(self, task: Task) -> TaskSpend:
        spend = self._tasks.get(task.task_id)
        if spend is None:
            if len(self._tasks) >= self.max_tasks:
                self._tasks.popitem(last=False)
            spend = TaskSpend(
                task_id=task.task_id,
                trust_domain=task.trust_domain,
                task_type=task.task_type,
                total_dollars=task.budget.total_dollars,
                spent_dollars=0.0,
                reserved_dollars=0.0,
                status=task.status,
                decisions=0,
                updated_at=self._clock(),
                tenant=task.tenant,
            )
            self._tasks[task.task_id] = spend
        self._tasks.move_to_end(task.task_id)
        return spend

    def _books(self, spend: TaskSpend, ledger: LedgerView) -> None:
        spend.spent_dollars = ledger.spent_dollars
        spend.reserved_dollars = ledger.reserved_dollars
        spend.updated_at = self._clock()

    def _snapshot(
        self, tenant: str | None = None
    ) -> tuple[list[DecisionRecord], list[TaskSpend], int]:
        """Records are shared (only their outcome is ever replaced, atomically); tasks copied.

        With ``tenant``, only that tenant's decisions and tasks (None: everyone's).
        """
        with self._lock:
            records = list(self._records)
            tasks = [replace(t) for t in self._tasks.values()]
            outcomes = self._outcomes
        if tenant is not None:
            records = [r for r in records if r.tenant == tenant]
            tasks = [t for t in tasks if t.tenant == tenant]
            outcomes = sum(r.outcome is not None for r in records)
        return records, tasks, outcomes

    def get(self, decision_id: str, tenant: str | None = None) -> DecisionRecord | None:
        """The logged decision with this id (of ``tenant``, if given), or None."""
        with self._lock:
            record = self._by_id.get(decision_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            return None
        return record

    def search(
        self, query: str = "", limit: int = 50, tenant: str | None = None
    ) -> list[DecisionRecord]:
        """Most recent first; ``query`` is a case-insensitive substring of id, task, model..."""
        records, _, _ = self._snapshot(tenant)
        needle = query.strip().lower()
        found = []
        for record in reversed(records):
            if not needle or needle in record.haystack:
                found.append(record)
                if len(found) >= limit:
                    break
        return found

    def summary(
        self,
        lam: float = 0.0,
        recent_tasks: int = 25,
        now: datetime | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """Every dashboard aggregation over the buffer (``tenant``'s part of it, if given)."""
        records, tasks, outcomes = self._snapshot(tenant)
        now = now or datetime.now(UTC)
        return {
            "generated_at": now.isoformat(),
            "totals": {
                "decisions": len(records),
                "outcomes": outcomes,
                "tasks": len(tasks),
                "max_decisions": self.max_decisions,
            },
            "tasks": [t.as_dict() for t in reversed(tasks[-recent_tasks:])],
            "domains": domain_spend(tasks),
            "model_mix": model_mix(records, now),
            "performance": performance(records, lam),
            "exploration": exploration(records),
            "actions": dict(Counter(r.action for r in records).most_common()),
        }


def domain_spend(tasks: Iterable[TaskSpend]) -> list[dict[str, Any]]:
    """Spent, reserved and budgeted dollars summed per trust domain, biggest spender first."""
    totals: dict[str, dict[str, Any]] = {}
    for t in tasks:
        row = totals.setdefault(
            t.trust_domain,
            {
                "trust_domain": t.trust_domain,
                "spent_dollars": 0.0,
                "reserved_dollars": 0.0,
                "total_dollars": 0.0,
                "tasks": 0,
                "open_tasks": 0,
            },
        )
        row["spent_dollars"] += t.spent_dollars
        row["reserved_dollars"] += t.reserved_dollars
        row["total_dollars"] += t.total_dollars
        row["tasks"] += 1
        row["open_tasks"] += t.status == "open"
    return sorted(totals.values(), key=lambda r: (-r["spent_dollars"], r["trust_domain"]))


def bucket_seconds(span_seconds: float, max_buckets: int = 30) -> int:
    """The smallest round bucket width that covers ``span_seconds`` in ``max_buckets``."""
    for step in BUCKET_STEPS:
        if span_seconds <= step * max_buckets:
            return step
    return BUCKET_STEPS[-1]


def model_mix(
    records: list[DecisionRecord], now: datetime, max_buckets: int = 30
) -> dict[str, Any]:
    """Decisions per model per time bucket, from the oldest logged decision to ``now``."""
    if not records:
        return {"bucket_seconds": BUCKET_STEPS[0], "models": [], "buckets": []}
    end = now.timestamp()
    start = min(r.created_at for r in records)
    width = bucket_seconds(end - start, max_buckets)
    last = int(end // width) * width
    count = min(max_buckets, int((last - int(start // width) * width) // width) + 1)
    first = last - (count - 1) * width
    buckets: list[Counter[str]] = [Counter() for _ in range(count)]
    totals: Counter[str] = Counter()
    for r in records:
        index = int((r.created_at - first) // width)
        model = r.model or NO_MODEL
        totals[model] += 1
        buckets[min(max(index, 0), count - 1)][model] += 1
    return {
        "bucket_seconds": width,
        "models": [m for m, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))],
        "buckets": [
            {
                "start": datetime.fromtimestamp(first + i * width, UTC).isoformat(),
                "counts": dict(b),
            }
            for i, b in enumerate(buckets)
        ],
    }


class _Stats:
    """Running sums for one group of outcomes."""

    def __init__(self) -> None:
        self.n = 0
        self.successes = 0
        self.quality = 0.0
        self.cost = 0.0
        self.reward = 0.0

    def add(self, outcome: OutcomeRecord, lam: float) -> None:
        self.n += 1
        self.successes += outcome.success
        self.quality += outcome.quality
        self.cost += outcome.cost_dollars
        self.reward += outcome.quality - lam * outcome.cost_dollars

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "success_rate": self.successes / self.n,
            "mean_quality": self.quality / self.n,
            "mean_cost_dollars": self.cost / self.n,
            "mean_reward": self.reward / self.n,
        }


def performance(records: list[DecisionRecord], lam: float = 0.0) -> dict[str, Any]:
    """Success rate and mean reward (quality - lam * cost) by model, step kind and both."""
    cells: dict[tuple[str, str], _Stats] = {}
    models: dict[str, _Stats] = {}
    kinds: dict[str, _Stats] = {}
    for r in records:
        if r.outcome is None:
            continue
        model = r.model or NO_MODEL
        kind = r.step_kind
        for stats in (
            cells.setdefault((model, kind), _Stats()),
            models.setdefault(model, _Stats()),
            kinds.setdefault(kind, _Stats()),
        ):
            stats.add(r.outcome, lam)
    return {
        "lambda": lam,
        "cells": [
            {"model": m, "step_kind": k, **s.as_dict()} for (m, k), s in sorted(cells.items())
        ],
        "by_model": [{"model": m, **s.as_dict()} for m, s in sorted(models.items())],
        "by_kind": [{"step_kind": k, **s.as_dict()} for k, s in sorted(kinds.items())],
    }


def exploration(records: list[DecisionRecord]) -> dict[str, Any]:
    """Share of draws off the top choice and mean 1 - propensity, overall and per domain."""
    overall = [0, 0, 0.0]
    domains: dict[str, list[Any]] = {}
    for r in records:
        if r.explored is None or r.propensity is None:
            continue
        for sums in (overall, domains.setdefault(r.trust_domain, [0, 0, 0.0])):
            sums[0] += 1
            sums[1] += r.explored
            sums[2] += 1.0 - r.propensity

    def row(sums: list[Any]) -> dict[str, Any]:
        n = sums[0]
        return {
            "draws": n,
            "explored": sums[1],
            "rate": sums[1] / n if n else 0.0,
            "mean_one_minus_propensity": sums[2] / n if n else 0.0,
        }

    return {
        **row(overall),
        "by_domain": [{"trust_domain": d, **row(s)} for d, s in sorted(domains.items())],
    }


def decision_row(record: DecisionRecord) -> dict[str, Any]:
    """One line of the recent-decisions list."""
    r = record
    return {
        "decision_id": r.decision_id,
        "task_id": r.task_id,
        "created_at": datetime.fromtimestamp(r.created_at, UTC).isoformat(),
        "model": r.model,
        "action": r.action,
        "trust_domain": r.trust_domain,
        "task_type": r.task_type,
        "step_kind": r.step_kind,
        "propensity": r.propensity,
        "explored": r.explored,
        "reserved_dollars": r.reserved_dollars,
        "rules": list(r.rules),
        "outcome": None if r.outcome is None else outcome_dict(r.outcome),
    }


def outcome_dict(outcome: OutcomeRecord) -> dict[str, Any]:
    return {
        "success": outcome.success,
        "quality": outcome.quality,
        "cost_dollars": outcome.cost_dollars,
        "latency_ms": outcome.latency_ms,
    }


def explanation(record: DecisionRecord) -> dict[str, Any]:
    """The full decision as JSON with the task facts and outcome beside it."""
    return {
        "decision": record.decision_json(),
        "task": {"trust_domain": record.trust_domain, "task_type": record.task_type},
        "explored": record.explored,
        "outcome": None if record.outcome is None else outcome_dict(record.outcome),
    }
