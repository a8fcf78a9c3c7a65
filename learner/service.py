"""The incremental learner: events -> join -> reward -> VW update -> store -> checkpoint.

Per batch polled from the events topic: decode each event (undecodable ones are dead-lettered),
feed it to the :class:`~learner.join.JoinBuffer`, learn every step, correction and task result
that becomes ready (in stream order, so the result does not depend on batch boundaries) and hand
the batch to the feature store's writer thread (:mod:`learner.store_writer`); then, every
``checkpoint_every_events`` events or ``checkpoint_every_seconds`` (and whenever it catches up),
wait for the store writes, flush the dead letters, write an atomic checkpoint and commit the
offsets to the group. A restart resumes from the checkpoint alone: nothing is
lost and nothing learned twice.

Offsets mean something only on the cluster that gave them. When the broker comes back as a
new cluster (the memory-only embedded broker restarted), the learner reads the new log from
offset 0: the router sends the events it retained again, and the join drops the copies of
those already learned by ``event_id``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from learner.allocator import BudgetAllocator
from learner.checkpoint import Checkpoint, atomic_write, read_checkpoint, write_checkpoint
from learner.collector import collect_between_polls
from learner.consumer import DeadLetterSink, EventConsumer, KafkaDeadLetters, Record
from learner.example_text import ExampleTexts
from learner.join import JoinBuffer, LearnCorrection, LearnStep, Signal, TaskResult
from learner.reward import RewardShaper
from learner.settings import BrokerUnavailable, CheckpointError, LearnerSettings
from learner.store_writer import BackgroundWriter, FeatureStore
from learner.vw_model import LabeledExample, VWPolicyModel
from learner.wire_events import AnyWireEvent, wire_json
from router_service.events import EventError

log = logging.getLogger(__name__)
STATUS_FILE = "learner_status.json"
# Events waiting in the topic past which the learner counts as catching up (a few polls' worth).
BEHIND_EVENTS = 10_000
# A broker call that fails (the broker is away or restarting) is retried after a pause; one
# warning in so many keeps a long outage from flooding the log.
BROKER_RETRY_SECONDS = 0.5
BROKER_FAILURES_PER_WARNING = 20

ModelUpdatedHook = Callable[[Callable[[], bytes], dict[str, Any], int, bool], VWPolicyModel | None]
"""Called with a getter of the model bytes, the allocator state, the events learned and whether
the learner is behind the stream; may return a model to continue from instead (the champion,
after a promotion or a rollback)."""


def _unit_weight(domain: str) -> float:
    return 1.0


class NoStore:
    """A feature store that keeps nothing, for when none is configured."""

    def write_events(self, events: Sequence[AnyWireEvent]) -> None:
        return None


def initial_model(settings: LearnerSettings, router_settings: Any = None) -> VWPolicyModel:
    """``settings.model_path`` if set, else the very model the router serves on day one."""
    if settings.model_path is not None:
        return VWPolicyModel.load(settings.model_path)
    from router_service.catalog import Catalog
    from router_service.policy import build_policy
    from router_service.settings import Settings

    router = router_settings if router_settings is not None else Settings()
    catalog = Catalog.from_file(router.catalog_path)
    return build_policy(router, list(catalog.snapshot().values())).model


class Learner:
    """Learns from decoded event batches; Kafka-free, so tests can drive it directly."""

    def __init__(
        self,
        settings: LearnerSettings,
        model: VWPolicyModel,
        *,
        dead_letters: DeadLetterSink,
        store: FeatureStore | None = None,
        on_model_updated: ModelUpdatedHook | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.settings = settings
        self.dead_letters = dead_letters
        self.store = store if store is not None else NoStore()
        self._writer = BackgroundWriter(self.store)
        self.on_model_updated = on_model_updated
        self.shaper = RewardShaper(
            settings.task_credit_weight,
            settings.reference_task_dollars,
            settings.correction_high_reward,
            settings.correction_low_reward,
        )
        self.join = JoinBuffer(
            settings.join_window_seconds,
            settings.dedupe_window_seconds,
            settings.task_close_wait_seconds,
            wait_for_task=settings.task_credit_weight > 0,
        )
        self.allocator = BudgetAllocator(
            settings.lambda_initial, settings.lambda_step, settings.spend_target_ratio
        )
        self.model = model
        self.cost_weight: Callable[[str], float] = _unit_weight
        """A trust domain's multiplier of its budget price (its policy's ``cost_weight``)."""
        self.positions: dict[int, int] = {}
        self.cluster_id = ""
        self._examples: list[str] = []
        self._texts = ExampleTexts()
        self.counters: Counter[str] = Counter()
        self.snapshot = 0
        if checkpoint is not None:
            self._restore(checkpoint)
        self._dirty = 0
        self._published_updates = self.counters["model_updates"]
        now = time.monotonic()
        self._last_checkpoint = self._last_status = self._last_publish = now
        self._rate = (now, self.counters["consumed"], 0.0)
        self.lag: int | None = None

    @classmethod
    def open(
        cls,
        settings: LearnerSettings,
        *,
        dead_letters: DeadLetterSink,
        router_settings: Any = None,
        store: FeatureStore | None = None,
        on_model_updated: ModelUpdatedHook | None = None,
    ) -> Learner:
        """Resume from the checkpoint in ``settings.data_dir``, else from the initial model."""
        checkpoint = read_checkpoint(settings.checkpoint_path)
        model = (
            VWPolicyModel.from_bytes(checkpoint.model)
            if checkpoint is not None
            else initial_model(settings, router_settings)
        )
        return cls(
            settings,
            model,
            dead_letters=dead_letters,
            store=store,
            on_model_updated=on_model_updated,
            checkpoint=checkpoint,
        )

    def _restore(self, checkpoint: Checkpoint) -> None:
        if checkpoint.topic != self.settings.topic:
            raise CheckpointError(
                f"checkpoint is for topic {checkpoint.topic!r}, settings.topic is "
                f"{self.settings.topic!r}; use another data_dir"
            )
        self.allocator = BudgetAllocator.from_state(checkpoint.allocator)
        self.join.restore(checkpoint.join)
        self.positions = dict(checkpoint.offsets)
        self.cluster_id = checkpoint.cluster_id
        self.counters = Counter(checkpoint.counters)
        self.snapshot = checkpoint.snapshot

    # -- learning -------------------------------------------------------------------------

    def process(self, records: Sequence[Record], topic: str | None = None) -> None:
        """Learn from one batch and hand it to the store writer (no checkpoint here).

        Rewards are computed as each signal arrives (stream order, so the allocator's prices
        are those of that moment); the VW updates of the batch then run in one call, in the
        same order, which gives the model bytes one ``learn`` per signal would.
        """
        events: list[AnyWireEvent] = []
        positions, add, decode = self.positions, self.join.add, self.join.decoder.decode
        for record in records:
            partition, offset, value = record
            expected = positions.get(partition)
            if expected is not None and offset < expected:
                # The consumer fell back to an earlier offset: the log was replaced under it
                # (our position was out of range). What follows is new; copies are deduped.
                self.counters["log_rewinds"] += 1
            positions[partition] = offset + 1
            if value is None:
                self._dead_letter("", "empty message (no value)", self._source(record, topic))
                continue
            try:
                event = decode(value)
            except EventError as exc:
                payload = value.decode(errors="replace")
                self._dead_letter(payload, exc.reason, self._source(record, topic))
                continue
            events.append(event)
            for signal in add(event, value.decode()):
                self._apply(signal)
        self.counters["consumed"] += len(records)
        self._dirty += len(records)
        if self._examples:
            self.model.learn_lines(self._examples)
            self._examples = []
        if events:
            self._writer.write_events(events)

    def _source(self, record: Record, topic: str | None) -> dict[str, Any]:
        """Where a dead-lettered message came from."""
        return {
            "topic": topic or self.settings.topic,
            "partition": record.partition,
            "offset": record.offset,
        }

    def _apply(self, signal: Signal) -> None:
        if isinstance(signal, LearnStep):
            decision = signal.decision
            domain = decision.trust_domain
            price = self.allocator.price(domain) * self.cost_weight(domain)
            reward = self.shaper.step_reward(decision, signal.outcome, signal.task, price)
            propensity = max(decision.propensity, self.settings.propensity_floor)
            self._learn(decision, decision.chosen_index, -reward, propensity)
            self.counters["learned_steps"] += 1
            if signal.task is not None:
                self.counters["task_credited_steps"] += 1
        elif isinstance(signal, LearnCorrection):
            decision = signal.decision
            for index, reward in self.shaper.correction_updates(decision, signal.correction):
                self._learn(decision, index, -reward, 1.0)
            self.counters["learned_corrections"] += 1
        elif isinstance(signal, TaskResult):
            task = signal.task
            self.allocator.observe_task(task.trust_domain, task.spent_dollars, task.total_dollars)
            self.counters["task_results"] += 1
        else:
            self._dead_letter(signal.payload, signal.reason, None)

    def _learn(self, decision: Any, chosen: int, cost: float, probability: float) -> None:
        """Queue one update for the end of the batch; dead-letter what VW cannot take."""
        example = LabeledExample(
            decision.shared_features, decision.action_features, chosen, cost, probability
        )
        try:
            self._examples.append(self._texts.example(example))
        except ValueError as exc:
            self._dead_letter(wire_json(decision), f"cannot learn: {exc}", None)
            return
        self.counters["model_updates"] += 1

    def _dead_letter(self, payload: str, reason: str, source: dict[str, Any] | None) -> None:
        self.counters["dead_lettered"] += 1
        log.debug("dead letter: %s", reason)
        self.dead_letters.send(payload, reason, source)

    # -- checkpoints, status, publication --------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Write the checkpoint now (store writes and dead letters flushed first, so no event
        it counts is missing from them)."""
        self._writer.flush()
        self.dead_letters.flush()
        checkpoint = Checkpoint(
            model=self.model.to_bytes(),
            topic=self.settings.topic,
            offsets=dict(self.positions),
            allocator=self.allocator.to_state(),
            join=self.join.to_state(),
            counters=dict(self.counters),
            snapshot=self.snapshot,
            cluster_id=self.cluster_id,
        )
        write_checkpoint(self.settings.checkpoint_path, checkpoint)
        self._dirty = 0
        self._last_checkpoint = time.monotonic()
        return checkpoint

    def after_batch(self, consumer: EventConsumer | None, idle: bool) -> None:
        """Checkpoint, commit, publish and write the status when they are due."""
        now = time.monotonic()
        if consumer is not None:
            self.lag = consumer.lag(self.positions)  # from the fetches' high watermarks: cheap
        due = self._dirty >= self.settings.checkpoint_every_events or (
            self._dirty > 0
            and (idle or now - self._last_checkpoint >= self.settings.checkpoint_every_seconds)
        )
        if due:
            self.checkpoint()
            if consumer is not None:
                consumer.commit(self.positions)
        if (
            self.on_model_updated is not None
            and self.counters["model_updates"] > self._published_updates
            and now - self._last_publish >= self.settings.publish_interval_seconds
        ):
            self.snapshot += 1
            self._published_updates = self.counters["model_updates"]
            self._last_publish = now
            replacement = self.on_model_updated(
                self.model.to_bytes,
                self.allocator.to_state(),
                self.counters["learned_steps"],
                (self.lag or 0) > BEHIND_EVENTS,
            )
            if replacement is not None:
                self.model = replacement
                self._dirty += 1
        if due or now - self._last_status >= self.settings.status_every_seconds:
            self.write_status()

    def close(self) -> None:
        """Finish the store writes handed over and stop the writer thread."""
        self._writer.close()

    def status(self) -> dict[str, Any]:
        """Counters, lag, lambdas, model snapshot counter and positions, as JSON-able data."""
        now = time.monotonic()
        since, consumed_then, rate = self._rate
        if now - since >= 1.0:
            rate = (self.counters["consumed"] - consumed_then) / (now - since)
            self._rate = (now, self.counters["consumed"], rate)
        join_stats = self.join.stats
        return {
            "consumed": self.counters["consumed"],
            "learned_steps": self.counters["learned_steps"],
            "learned_corrections": self.counters["learned_corrections"],
            "task_results": self.counters["task_results"],
            "model_updates": self.counters["model_updates"],
            "dead_lettered": self.counters["dead_lettered"],
            "duplicates": join_stats["duplicates"],
            "duplicate_outcomes": join_stats["duplicate_outcomes"],
            "late": join_stats["late"],
            "cluster_changes": self.counters["cluster_changes"],
            "log_rewinds": self.counters["log_rewinds"],
            "broker_failures": self.counters["broker_failures"],
            "unjoined": join_stats["unjoined"],
            "task_corrections_stored_only": join_stats["task_corrections"],
            "pending": self.join.pending(),
            "consumer_lag": self.lag,
            "lambdas": self.allocator.lambdas(),
            "snapshot": self.snapshot,
            "positions": {str(p): o for p, o in sorted(self.positions.items())},
            "uncheckpointed_events": self._dirty,
            "events_per_second": round(rate, 1),
            "updated_at": time.time(),
        }

    def write_status(self) -> None:
        atomic_write(self.settings.status_path, json.dumps(self.status(), indent=2).encode())
        self._last_status = time.monotonic()

    def run(self, consumer: EventConsumer, stop: threading.Event) -> None:
        """Poll, learn and checkpoint until ``stop`` is set, then checkpoint once more.

        The garbage collector runs between polls only (:mod:`learner.collector`).
        """
        try:
            with collect_between_polls() as after_poll:
                while not stop.is_set():
                    self._poll_once(consumer, stop)
                    after_poll()
        finally:
            if self._dirty:
                self.checkpoint()
                with contextlib.suppress(Exception):
                    consumer.commit(self.positions)
            self.write_status()

    def _poll_once(self, consumer: EventConsumer, stop: threading.Event) -> None:
        """One poll: learn what it brought, then checkpoint, commit and publish when due."""
        try:
            records = consumer.poll()
            if self._follow_cluster(consumer):
                records = []  # fetched at positions of another cluster: read from 0
        except BrokerUnavailable as exc:  # away or restarting: wait, never exit
            self._broker_failed(exc, stop)
            records = []
        if records:
            self.process(records, consumer.topic)
        self.after_batch(consumer, idle=not records)

    def _broker_failed(self, exc: BrokerUnavailable, stop: threading.Event) -> None:
        """Count and (now and then) log a failed broker call, then pause before the next."""
        self.counters["broker_failures"] += 1
        if self.counters["broker_failures"] % BROKER_FAILURES_PER_WARNING == 1:
            log.warning("%s; retrying (failure %d)", exc, self.counters["broker_failures"])
        stop.wait(BROKER_RETRY_SECONDS)

    def _follow_cluster(self, consumer: EventConsumer) -> bool:
        """Adopt the consumer's cluster; True when the positions held for another were dropped."""
        cluster_id = consumer.cluster_id
        if not cluster_id or cluster_id == self.cluster_id:
            return False
        previous = self.cluster_id
        if previous:  # raises BrokerUnavailable before adopting it: the next poll tries again
            consumer.restart_from_beginning()
            log.warning(
                "cluster %r replaced %r: reading %s from the beginning",
                cluster_id,
                previous,
                self.settings.topic,
            )
            self.counters["cluster_changes"] += 1
        self.cluster_id = cluster_id
        self._dirty += 1
        return bool(previous)


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """The last status the learner wrote under ``data_dir``, or None if it never ran there."""
    try:
        return json.loads((data_dir / STATUS_FILE).read_text())
    except FileNotFoundError:
        return None


def default_store(settings: LearnerSettings) -> FeatureStore:
    """The DuckDB feature store at ``<data_dir>/features.duckdb`` when it is installed."""
    try:
        from feature_store.store import DuckDBFeatureStore  # type: ignore[import-not-found]
    except ImportError:
        log.warning("feature_store.store is not available; events are not stored")
        return NoStore()
    return DuckDBFeatureStore(  # type: ignore[no-any-return]
        settings.feature_store_path, memory_limit=settings.feature_store_memory_limit
    )


def run_learner(
    settings: LearnerSettings,
    stop: threading.Event,
    *,
    router_settings: Any = None,
    store: FeatureStore | None = None,
    on_model_updated: ModelUpdatedHook | None = None,
    cost_weight: Callable[[str], float] | None = None,
) -> Learner:
    """Connect to the broker, resume, and learn until ``stop`` is set."""
    from router_service.embedded_broker import ensure_topics

    ensure_topics(settings.bootstrap_servers, [settings.topic, settings.dead_letter_topic])
    dead_letters = KafkaDeadLetters(settings.bootstrap_servers, settings.dead_letter_topic)
    learner = Learner.open(
        settings,
        dead_letters=dead_letters,
        router_settings=router_settings,
        store=store if store is not None else default_store(settings),
        on_model_updated=on_model_updated,
    )
    if cost_weight is not None:
        learner.cost_weight = cost_weight
    consumer = EventConsumer(settings, learner.positions)
    log.info("learner resuming at offsets %s of %s", learner.positions, settings.topic)
    try:
        learner.run(consumer, stop)
    finally:
        consumer.close()
        dead_letters.close()
        learner.close()
        close = getattr(learner.store, "close", None)
        if callable(close):
            close()
    return learner
