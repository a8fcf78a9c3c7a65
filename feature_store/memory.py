"""An in-memory feature store with the same write and read rules, for unit tests of callers."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from feature_store.batch import AnyStoredEvent, ExistingKeys, WriteResult, plan_batch
from feature_store.logged import LoggedStep
from feature_store.rolling import RollingWindow
from feature_store.schema import from_utc_naive, to_utc_naive
from feature_store.snapshot import FeatureKey, RollingFeature, write_rolling_snapshot
from router_service.events import CorrectionEvent, DecisionEvent, OutcomeEvent, TaskClosedEvent


class InMemoryFeatureStore:
    """Keeps events in dicts; batches are planned exactly as the DuckDB store plans them."""

    def __init__(self, *, window: RollingWindow | None = None) -> None:
        self.window = window or RollingWindow()
        self.decisions: dict[str, DecisionEvent] = {}
        self.outcomes: dict[str, OutcomeEvent] = {}
        self.corrections: dict[str, CorrectionEvent] = {}
        self.tasks: dict[str, TaskClosedEvent] = {}

    def write_events(self, events: Sequence[AnyStoredEvent]) -> WriteResult:
        """Apply a batch all at once; redeliveries change nothing."""
        stored = [
            *(("decision", e.event_id) for e in self.decisions.values()),
            *(("outcome", e.event_id) for e in self.outcomes.values()),
            *(("correction", e.event_id) for e in self.corrections.values()),
            *(("task_closed", e.event_id) for e in self.tasks.values()),
        ]
        plan = plan_batch(
            events,
            ExistingKeys(
                event_ids=frozenset(stored),
                decision_owner={k: e.event_id for k, e in self.decisions.items()},
                outcome_owner={k: e.event_id for k, e in self.outcomes.items()},
                task_owner={k: e.event_id for k, e in self.tasks.items()},
            ),
        )
        self.decisions.update((e.decision_id, e) for e in plan.decisions)
        self.outcomes.update((e.decision_id, e) for e in plan.outcomes)
        self.corrections.update((e.event_id, e) for e in plan.corrections)
        self.tasks.update((e.task_id, e) for e in plan.tasks)
        return plan.result()

    def rolling_features(self) -> list[RollingFeature]:
        """Per-(model, step_type, trust_domain) features over the last ``window`` outcomes."""
        by_key: dict[FeatureKey, list[OutcomeEvent]] = defaultdict(list)
        for outcome in self.outcomes.values():
            by_key[outcome.model, outcome.step_type, outcome.trust_domain].append(outcome)
        features = []
        for key in sorted(by_key):
            ordered = sorted(
                by_key[key], key=lambda o: (to_utc_naive(o.occurred_at), o.event_id), reverse=True
            )
            recent = ordered[: self.window.outcomes]
            n = len(recent)
            successes = sum(o.success for o in recent)
            latencies = [o.latency_ms for o in recent if o.latency_ms is not None]
            features.append(
                RollingFeature(
                    model=key[0],
                    step_type=key[1],
                    trust_domain=key[2],
                    n=n,
                    successes=successes,
                    success_rate=successes / n,
                    mean_quality=math.fsum(o.quality for o in recent) / n,
                    mean_cost_dollars=math.fsum(o.cost_dollars for o in recent) / n,
                    mean_latency_s=math.fsum(latencies) / len(latencies) / 1000
                    if latencies
                    else None,
                    n_total=len(ordered),
                    last_outcome_at=from_utc_naive(to_utc_naive(recent[0].occurred_at)),
                    window=self.window.outcomes,
                )
            )
        return features

    def export_rolling_features(self, path: Path) -> int:
        """Write the rolling-feature snapshot atomically; return how many keys it holds."""
        features = self.rolling_features()
        write_rolling_snapshot(features, Path(path))
        return len(features)

    def logged_steps(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        trust_domain: str | None = None,
        policy_version: str | None = None,
    ) -> list[LoggedStep]:
        """Decisions joined with their outcomes (and task success when closed), by time."""
        low = None if since is None else to_utc_naive(since)
        high = None if until is None else to_utc_naive(until)
        steps = []
        for d in self.decisions.values():
            outcome = self.outcomes.get(d.decision_id)
            at = to_utc_naive(d.occurred_at)
            if (
                outcome is None
                or (low is not None and at < low)
                or (high is not None and at >= high)
                or trust_domain not in (None, d.trust_domain)
                or policy_version not in (None, d.policy_version)
            ):
                continue
            task = self.tasks.get(d.task_id)
            steps.append(
                (
                    (at, d.decision_id),
                    LoggedStep(
                        decision_id=d.decision_id,
                        task_id=d.task_id,
                        trust_domain=d.trust_domain,
                        step_kind=d.step_kind,
                        step_type=d.step_type,
                        policy_version=d.policy_version,
                        actions=list(d.actions),
                        pmf=list(d.pmf),
                        chosen_index=d.chosen_index,
                        propensity=d.propensity,
                        shared_features=d.shared_features,
                        action_features=d.action_features,
                        estimated_costs=list(d.estimated_costs),
                        success=outcome.success,
                        quality=outcome.quality,
                        cost_dollars=outcome.cost_dollars,
                        task_success=None if task is None else task.success,
                    ),
                )
            )
        return [step for _, step in sorted(steps, key=lambda item: item[0])]

    def close(self) -> None:
        """Nothing to release."""
