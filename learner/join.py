"""The decision/outcome join: event-time windows, early and late events, duplicates.

All time is event time (each event's ``occurred_at``); the watermark is the latest time seen.
Nothing reads the wall clock, so the same events in the same order always give the same
signals, whatever the batch boundaries: this is what makes a restart from a checkpoint exact.

- A decision waits ``window`` seconds for its outcome; without one it goes to the dead-letter
  topic ("no outcome ... within the join window").
- An outcome (or correction) that arrives before its decision waits ``window`` seconds for it;
  one for an unknown decision is dead-lettered once that wait is over (at once if its event
  time is already more than ``window`` behind the watermark).
- An outcome for a decision that already expired is late: dead-lettered with the delay.
- An event whose ``event_id`` was seen in the last ``dedupe_window`` seconds is a duplicate and
  ignored; a second outcome for a joined decision is dead-lettered.
- A joined step waits up to ``task_wait`` seconds for its task's result (a task-closed event)
  so the task's success and quality can be credited to it; with a zero task-credit weight
  it is learned at once.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from learner.decoder import EventDecoder
from learner.wire_events import AnyWireEvent, Correction, Decision, Outcome, TaskClosed


@dataclass(frozen=True)
class LearnStep:
    """A decision joined with its outcome and, when known in time, its task's result."""

    decision: Decision
    outcome: Outcome
    task: TaskClosed | None


@dataclass(frozen=True)
class LearnCorrection:
    """A human correction of a known decision."""

    decision: Decision
    correction: Correction


@dataclass(frozen=True)
class TaskResult:
    """A task closed: its spend feeds the budget allocator."""

    task: TaskClosed


@dataclass(frozen=True)
class DeadLetter:
    """An event that cannot be learned from, with the reason."""

    payload: str
    reason: str


Signal = LearnStep | LearnCorrection | TaskResult | DeadLetter


@dataclass
class _Decision:
    """A decision held for its outcome and, until the window closes, for corrections.

    Once joined it keeps only its JSON: a parsed decision is some sixty dicts and lists that
    the collector walks and the heap holds for the whole window; a correction (rare) parses
    it again.
    """

    parsed: Decision | None
    raw: str
    joined: bool = False


@dataclass(frozen=True)
class _Joined:
    decision: Decision
    outcome: Outcome
    decision_raw: str
    outcome_raw: str


@dataclass
class _Task:
    result: TaskClosed | None = None
    result_raw: str | None = None
    # Joined steps waiting for the result, in join order, by decision id.
    waiting: dict[str, _Joined] = field(default_factory=dict)


def event_time(event: AnyWireEvent) -> float:
    return event.occurred_at.timestamp()


class JoinBuffer:
    """Joins decisions with outcomes, corrections and task results, in event time."""

    def __init__(
        self,
        window: float,
        dedupe_window: float,
        task_wait: float,
        wait_for_task: bool = True,
    ) -> None:
        self.decoder = EventDecoder()
        """Parses held events again, with the catalog facts their decisions refer to."""
        self.window = window
        self.dedupe_window = dedupe_window
        self.task_wait = task_wait
        self.wait_for_task = wait_for_task
        self.watermark = float("-inf")
        self.stats: Counter[str] = Counter()
        # Event ids in arrival order, pruned from the front: an OrderedDict, as a plain dict
        # finds its first key in time that grows with the keys deleted before it.
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._decisions: dict[str, _Decision] = {}
        self._expired: dict[str, float] = {}
        self._early: dict[str, list[tuple[float, str]]] = {}
        self._tasks: dict[str, _Task] = {}
        self._heap: list[tuple[float, int, str, str, str]] = []
        self._seq = 0

    def add(self, event: AnyWireEvent, raw: str) -> list[Signal]:
        """Feed one decoded event (``raw`` is its JSON); returns what became learnable."""
        if event.event_id in self._seen:
            self.stats["duplicates"] += 1
            return []
        time = event_time(event)
        self._seen[event.event_id] = time
        signals: list[Signal] = []
        if time > self.watermark:
            self.watermark = time
            self._expire(signals)
        kind = event.type
        if kind == "decision":
            self._on_decision(event, raw, time, signals)  # type: ignore[arg-type]
        elif kind == "task_closed":
            self._on_task_closed(event, raw, time, signals)  # type: ignore[arg-type]
        else:
            self._on_follow_up(event, raw, time, signals)  # type: ignore[arg-type]
        return signals

    # -- arrivals -----------------------------------------------------------------------

    def _on_decision(self, event: Decision, raw: str, time: float, signals: list[Signal]) -> None:
        did = event.decision_id
        if did in self._decisions or did in self._expired:
            signals.append(DeadLetter(raw, f"decision_id {did!r} was already seen"))
            return
        problem = _decision_problem(event)
        if problem is not None:
            signals.append(DeadLetter(raw, problem))
            return
        self._decisions[did] = _Decision(event, raw)
        self._push(time + self.window, "decision", did)
        for _, early_raw in self._early.pop(did, []):
            self._on_follow_up(self._parse(early_raw), early_raw, time, signals)

    def _on_follow_up(
        self,
        event: Outcome | Correction,
        raw: str,
        time: float,
        signals: list[Signal],
    ) -> None:
        did = event.decision_id
        if did is None:
            self.stats["task_corrections"] += 1
            return
        record = self._decisions.get(did)
        if record is None:
            if did in self._expired:
                self.stats["late"] += 1
                delay = time - self._expired[did]
                signals.append(
                    DeadLetter(
                        raw,
                        f"late: decision {did!r} was {delay:.1f}s earlier, "
                        f"beyond the {self.window:g}s join window",
                    )
                )
                return
            self._early.setdefault(did, []).append((time, raw))
            self._push(time + self.window, "early", did)
            if time + self.window < self.watermark:  # already too old to wait for its decision
                self._expire_early(did, signals)
            return
        if event.type == "correction":
            self._on_correction(record, event, raw, signals)  # type: ignore[arg-type]
            return
        if record.joined:
            self.stats["duplicate_outcomes"] += 1
            signals.append(DeadLetter(raw, f"second outcome for decision {did!r}"))
            return
        decision = self._held(record)
        if event.model != decision.model:
            signals.append(
                DeadLetter(
                    raw,
                    f"outcome model {event.model!r} differs from the decision's model "
                    f"{decision.model!r}",
                )
            )
            return
        record.joined, record.parsed = True, None
        task = self._tasks.get(decision.task_id)
        if not self.wait_for_task or (task is not None and task.result is not None):
            signals.append(LearnStep(decision, event, task.result if task else None))
            return
        if task is None:
            task = self._tasks[decision.task_id] = _Task()
        task.waiting[did] = _Joined(decision, event, record.raw, raw)
        self._push(time + self.task_wait, "task_wait", decision.task_id, did)

    def _on_correction(
        self, record: _Decision, event: Correction, raw: str, signals: list[Signal]
    ) -> None:
        decision = self._held(record)
        actions = decision.actions
        if event.preferred_model is not None and event.preferred_model not in actions:
            signals.append(
                DeadLetter(
                    raw,
                    f"preferred_model {event.preferred_model!r} is not among the decision's "
                    f"actions {actions}",
                )
            )
            return
        if event.preferred_model is None and event.rating is None:
            signals.append(DeadLetter(raw, "correction has neither preferred_model nor rating"))
            return
        signals.append(LearnCorrection(decision, event))

    def _on_task_closed(
        self, event: TaskClosed, raw: str, time: float, signals: list[Signal]
    ) -> None:
        signals.append(TaskResult(event))
        task = self._tasks.setdefault(event.task_id, _Task())
        if task.result is not None:
            signals.append(DeadLetter(raw, f"task {event.task_id!r} was already closed"))
            return
        task.result, task.result_raw = event, raw
        for joined in task.waiting.values():
            signals.append(LearnStep(joined.decision, joined.outcome, event))
        task.waiting.clear()
        self._push(time + max(self.task_wait, self.window), "task", event.task_id)

    # -- expiry -------------------------------------------------------------------------

    def _push(self, deadline: float, kind: str, key: str, extra: str = "") -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, kind, key, extra))

    def _expire(self, signals: list[Signal]) -> None:
        heap = self._heap
        while heap and heap[0][0] < self.watermark:
            deadline, _, kind, key, extra = heapq.heappop(heap)
            if kind == "decision":
                self._expire_decision(key, deadline, signals)
            elif kind == "early":
                self._expire_early(key, signals)
            elif kind == "task_wait":
                self._expire_task_wait(key, extra, signals)
            elif kind == "task":
                task = self._tasks.get(key)
                if task is not None and not task.waiting:
                    del self._tasks[key]
            elif kind == "forget":
                self._expired.pop(key, None)
        horizon = self.watermark - self.dedupe_window
        seen = self._seen
        while seen and next(iter(seen.values())) < horizon:
            seen.popitem(last=False)

    def _expire_decision(self, did: str, deadline: float, signals: list[Signal]) -> None:
        record = self._decisions.pop(did, None)
        if record is None:
            return
        time = deadline - self.window
        if not record.joined:
            self.stats["unjoined"] += 1
            signals.append(
                DeadLetter(record.raw, f"no outcome for decision {did!r} within the join window")
            )
        self._expired[did] = time
        self._push(deadline + self.window, "forget", did)

    def _expire_early(self, did: str, signals: list[Signal]) -> None:
        pending = self._early.get(did)
        if not pending:
            return
        keep = []
        for time, raw in pending:
            if time + self.window < self.watermark:
                self.stats["unjoined"] += 1
                signals.append(
                    DeadLetter(raw, f"no decision {did!r} arrived within the join window")
                )
            else:
                keep.append((time, raw))
        if keep:
            self._early[did] = keep
        else:
            del self._early[did]

    def _expire_task_wait(self, task_id: str, did: str, signals: list[Signal]) -> None:
        task = self._tasks.get(task_id)
        if task is None or did not in task.waiting:
            return
        joined = task.waiting.pop(did)
        signals.append(LearnStep(joined.decision, joined.outcome, None))
        if not task.waiting and task.result is None:
            del self._tasks[task_id]

    # -- checkpoint state ---------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as JSON-able data (events as their JSON)."""
        return {
            "watermark": self.watermark if self.watermark != float("-inf") else None,
            "stats": dict(self.stats),
            "seen": list(self._seen.items()),
            "decisions": [[r.raw, r.joined] for r in self._decisions.values()],
            "expired": list(self._expired.items()),
            "early": list(self._early.items()),
            "tasks": [
                [
                    task_id,
                    t.result_raw,
                    [[j.decision_raw, j.outcome_raw] for j in t.waiting.values()],
                ]
                for task_id, t in self._tasks.items()
            ],
            "heap": self._heap,
            "seq": self._seq,
            "model_facts": self.decoder.to_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load what :meth:`to_state` wrote."""
        self.decoder.restore(state.get("model_facts", {}))  # absent before schema version 2
        watermark = state["watermark"]
        self.watermark = float("-inf") if watermark is None else watermark
        self.stats = Counter(state["stats"])
        self._seen = OrderedDict((k, v) for k, v in state["seen"])
        self._decisions = {}
        for raw, joined in state["decisions"]:
            event = self._decision(raw)
            self._decisions[event.decision_id] = _Decision(None if joined else event, raw, joined)
        self._expired = dict((k, v) for k, v in state["expired"])
        self._early = {did: [(t, raw) for t, raw in items] for did, items in state["early"]}
        self._tasks = {}
        for task_id, result_raw, waiting in state["tasks"]:
            result = None if result_raw is None else self._parse(result_raw)
            assert result is None or result.type == "task_closed"
            joined = [self._joined(d, o) for d, o in waiting]
            self._tasks[task_id] = _Task(
                result, result_raw, {j.decision.decision_id: j for j in joined}
            )
        self._heap = [tuple(entry) for entry in state["heap"]]  # type: ignore[misc]
        heapq.heapify(self._heap)
        self._seq = state["seq"]

    def _parse(self, raw: str) -> AnyWireEvent:
        return self.decoder.decode(raw.encode())

    def _held(self, record: _Decision) -> Decision:
        return record.parsed if record.parsed is not None else self._decision(record.raw)

    def _decision(self, raw: str) -> Decision:
        """A held decision's JSON, parsed again."""
        event = self._parse(raw)
        assert event.type == "decision"
        return event

    def _joined(self, decision_raw: str, outcome_raw: str) -> _Joined:
        outcome = self._parse(outcome_raw)
        assert outcome.type == "outcome"
        return _Joined(self._decision(decision_raw), outcome, decision_raw, outcome_raw)

    def pending(self) -> int:
        """Decisions and early events held in memory."""
        waiting = sum(len(t.waiting) for t in self._tasks.values())
        return len(self._decisions) + sum(len(v) for v in self._early.values()) + waiting


def _decision_problem(event: Decision) -> str | None:
    sizes = (len(event.actions), len(event.pmf), len(event.action_features))
    if len(set(sizes)) != 1:
        return (
            f"decision {event.decision_id!r}: actions, pmf and action_features differ in "
            f"length {sizes}"
        )
    if event.chosen_index >= sizes[0]:
        return (
            f"decision {event.decision_id!r}: chosen_index {event.chosen_index} is out of "
            f"range for {sizes[0]} actions"
        )
    return None
