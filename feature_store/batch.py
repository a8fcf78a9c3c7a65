"""Plan a batch write: which events are new, which are redeliveries, which are rejected and why.

Pure logic shared by every store implementation, so they agree on idempotency: an event whose
(type, ``event_id``) is already stored, or appears earlier in the batch, is a duplicate and
changes nothing; a second outcome for a decision, a second decision with the same
``decision_id`` or a second close of a task is rejected with a reason, and the first one stays.
Events are read by attribute and told apart by ``type``: the router's pydantic events and the
learner's structs (learner.wire_events) alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from router_service.events import (
    CorrectionEvent,
    DecisionEvent,
    OutcomeEvent,
    TaskClosedEvent,
)

AnyStoredEvent = DecisionEvent | OutcomeEvent | CorrectionEvent | TaskClosedEvent
PMF_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Rejected:
    """An event the store refused to write, and why (the learner sends it to the dead letters)."""

    event_id: str
    event_type: str
    reason: str


@dataclass(frozen=True)
class WriteResult:
    """What one batch write did: rows written, redeliveries ignored, events rejected."""

    written: int
    duplicates: int
    rejected: tuple[Rejected, ...] = ()


@dataclass(frozen=True)
class ExistingKeys:
    """Keys already stored: (event type, event_id) pairs and the event owning each unique key."""

    event_ids: frozenset[tuple[str, str]] = frozenset()
    decision_owner: dict[str, str] = field(default_factory=dict)
    outcome_owner: dict[str, str] = field(default_factory=dict)
    task_owner: dict[str, str] = field(default_factory=dict)


@dataclass
class BatchPlan:
    """The events of a batch to insert, grouped by table, and the outcome of the rest."""

    decisions: list[DecisionEvent] = field(default_factory=list)
    outcomes: list[OutcomeEvent] = field(default_factory=list)
    corrections: list[CorrectionEvent] = field(default_factory=list)
    tasks: list[TaskClosedEvent] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def written(self) -> int:
        return len(self.decisions) + len(self.outcomes) + len(self.corrections) + len(self.tasks)

    def result(self) -> WriteResult:
        return WriteResult(self.written, self.duplicates, tuple(self.rejected))


def decision_problem(event: DecisionEvent) -> str | None:
    """Why a decision cannot be used for off-policy learning, or None if it is consistent."""
    n = len(event.actions)
    for name, values in (
        ("pmf", event.pmf),
        ("estimated_costs", event.estimated_costs),
        ("action_features", event.action_features),
    ):
        if len(values) != n:
            return f"{name} has {len(values)} entries, expected {n} (one per action)"
    if event.chosen_index >= n:
        return f"chosen_index {event.chosen_index} out of range for {n} actions"
    if event.actions[event.chosen_index] != event.model:
        return (
            f"model {event.model!r} is not actions[chosen_index] "
            f"{event.actions[event.chosen_index]!r}"
        )
    if any(p < 0 or not math.isfinite(p) for p in event.pmf):
        return "pmf has a negative or non-finite probability"
    if abs(sum(event.pmf) - 1.0) > 1e-3:
        return f"pmf sums to {sum(event.pmf):.6g}, expected 1"
    if abs(event.pmf[event.chosen_index] - event.propensity) > PMF_TOLERANCE:
        return (
            f"propensity {event.propensity:.6g} differs from pmf[chosen_index] "
            f"{event.pmf[event.chosen_index]:.6g}"
        )
    return None


def plan_batch(events: Sequence[AnyStoredEvent], existing: ExistingKeys) -> BatchPlan:
    """Split a batch into rows to insert, duplicates and rejections, in batch order."""
    plan = BatchPlan()
    seen = set(existing.event_ids)
    decision_owner = dict(existing.decision_owner)
    outcome_owner = dict(existing.outcome_owner)
    task_owner = dict(existing.task_owner)
    for event in events:
        if (event.type, event.event_id) in seen:
            plan.duplicates += 1
            continue
        reason: str | None = None
        kind = event.type
        if kind == "decision":
            owner = decision_owner.get(event.decision_id)
            reason = decision_problem(event)
            if owner is not None:
                reason = f"decision_id {event.decision_id!r} already logged by event {owner!r}"
            if reason is None:
                decision_owner[event.decision_id] = event.event_id
                plan.decisions.append(event)
        elif kind == "outcome":
            owner = outcome_owner.get(event.decision_id)
            if owner is not None:
                reason = (
                    f"duplicate outcome for decision_id {event.decision_id!r}: "
                    f"the first outcome (event {owner!r}) is kept"
                )
            else:
                outcome_owner[event.decision_id] = event.event_id
                plan.outcomes.append(event)
        elif kind == "correction":
            plan.corrections.append(event)
        else:
            owner = task_owner.get(event.task_id)
            if owner is not None:
                reason = f"task {event.task_id!r} already closed by event {owner!r}"
            else:
                task_owner[event.task_id] = event.event_id
                plan.tasks.append(event)
        if reason is None:
            seen.add((event.type, event.event_id))
        else:
            plan.rejected.append(Rejected(event.event_id, event.type, reason))
    return plan
