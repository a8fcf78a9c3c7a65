"""Publishing router events to Kafka without ever blocking a decision (outbox pattern).

``publish`` only appends to an in-memory queue. A writer thread group-commits the queue into the
:class:`~router_service.spool.EventSpool` (one fsync per batch, shared by every waiting caller
of ``publish_durable``), and a delivery thread drains the spool to one Kafka topic, keyed by
``task_id``, in sequence order, marking rows delivered once the broker has acknowledged them.
Delivered rows stay in the spool for ``retain_delivered`` seconds: when the cluster id the
broker reports changes (the memory-only embedded broker restarted empty), they are sent again,
and the learner drops the copies it already has by ``event_id``. A broker that is down, slow
or restarted empty only delays delivery; the spool keeps the events, also across a restart of
the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from router_service.embedded_broker import ensure_topics
from router_service.errors import RouterError
from router_service.events import EventBase, encode_event
from router_service.settings import KafkaSettings
from router_service.spool import EventSpool, SpooledEvent, SpoolError

__all__ = [
    "EventPublisher",
    "InMemoryPublisher",
    "KafkaEventPublisher",
    "PublisherError",
    "PublisherStats",
]

logger = logging.getLogger(__name__)

_MAX_COMMIT = 1_000  # events per spool transaction (one fsync)
_LINGER_S = 0.02  # how long decision events may wait to share a transaction
# While events come, the writer looks for them every _LINGER_S instead of being woken for each:
# waking a thread is a cross-CPU wake-up paid by the deciding thread (Condition.notify was 7.8%
# of the decide endpoint's samples in process). After this many empty looks it sleeps until an
# event wakes it.
_QUIET_LOOKS = 50
_CLUSTER_CHECK_S = 1.0  # how often the delivery thread asks which cluster it is talking to
_ABANDON_MARGIN_S = 2.0  # how long close() waits past its deadline for the sender to stop
# librdkafka (confluent-kafka) delivers from its own C threads: the serving process's GIL is
# not spent on batching, checksums and sockets, as it was with a pure-Python producer.
_PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    # Idempotence keeps order across retries and with several requests in flight.
    "enable.idempotence": True,
    "linger.ms": 5,
    "request.timeout.ms": 3_000,
    "message.timeout.ms": 8_000,
    "socket.timeout.ms": 3_000,
    "reconnect.backoff.max.ms": 1_000,
    "client.id": "budget-router",
}


class PublisherError(RouterError):
    """An event could not be accepted durably (publisher closed, spool failing, timeout)."""

    status_code = 503
    code = "event_publisher_unavailable"
    retriable = True


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters for metrics and health: what was accepted, spooled, delivered and failed."""

    published: int
    spooled: int
    delivered: int
    failures: int
    depth: int
    broker_available: bool
    redelivered: int = 0


class EventPublisher(Protocol):
    """The seam between the router and its event bus."""

    def publish(self, event: EventBase) -> None:
        """Accept ``event`` for delivery and return at once (the decision path)."""

    def publish_durable(self, event: EventBase, timeout: float | None = None) -> None:
        """Return once ``event`` is durably accepted; raise :class:`PublisherError` otherwise."""

    async def publish_durable_async(self, event: EventBase, timeout: float | None = None) -> None:
        """``publish_durable`` for async endpoints, without blocking the event loop."""

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be delivered within ``timeout``, keep the rest, stop."""

    @property
    def depth(self) -> int:
        """How many accepted events are not delivered yet."""


class InMemoryPublisher:
    """An :class:`EventPublisher` that keeps events in a list, for tests of other parts."""

    def __init__(self) -> None:
        self.events: list[EventBase] = []
        self.closed = False

    def publish(self, event: EventBase) -> None:
        """Append ``event`` to :attr:`events`."""
        if self.closed:
            raise PublisherError("the event publisher is closed")
        self.events.append(event)

    def publish_durable(self, event: EventBase, timeout: float | None = None) -> None:
        """Append ``event`` to :attr:`events`."""
        self.publish(event)

    async def publish_durable_async(self, event: EventBase, timeout: float | None = None) -> None:
        """Append ``event`` to :attr:`events`."""
        self.publish(event)

    def close(self, timeout: float = 5.0) -> None:
        """Refuse further events."""
        self.closed = True

    @property
    def depth(self) -> int:
        """Always 0: every event is delivered to the list at once."""
        return 0


def _settle(future: Future[None] | None, error: BaseException | None = None) -> None:
    """Resolve a durable caller's future unless it already gave up (timed out, cancelled)."""
    if future is None:
        return
    with contextlib.suppress(InvalidStateError):
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _discard(producer: Producer) -> None:
    """Drop what a broken producer still holds (the spool keeps it) and let it go."""
    try:
        producer.purge()
        producer.flush(0)
    except Exception as exc:  # closing a broken client must not stop the loop
        logger.debug("ignoring error while closing the producer: %r", exc)


@dataclass(slots=True)
class _Queued:
    event: EventBase
    future: Future[None] | None


class KafkaEventPublisher:
    """An :class:`EventPublisher` over a durable spool, delivering to one Kafka topic."""

    def __init__(
        self,
        bootstrap_servers: str | None,
        topic: str,
        spool: EventSpool,
        *,
        partitions: int = 1,
        batch_size: int = 500,
        durable_timeout: float = 10.0,
        backoff: tuple[float, float] = (0.1, 5.0),
        retain_delivered: float = 120.0,
        producer_config: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if retain_delivered < 0:
            raise ValueError(f"retain_delivered must be >= 0 seconds, got {retain_delivered}")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.partitions = partitions
        self._spool = spool
        self._batch_size = batch_size
        self._durable_timeout = durable_timeout
        self._backoff_min, self._backoff_max = backoff
        self._producer_config = {**_PRODUCER_DEFAULTS, **(producer_config or {})}
        self._retain_delivered = retain_delivered
        self._producer: Producer | None = None
        self._cluster_id = ""  # the cluster the connected producer talks to
        self._cluster_checked = 0.0
        self._redelivered = 0

        self._cond = threading.Condition()
        self._queue: deque[_Queued] = deque()
        self._closing = False
        self._close_deadline = float("inf")
        self._wake = threading.Event()  # set when the spool has new rows, or on close
        self._closing_event = threading.Event()  # cuts delivery backoff short on close
        self._published = self._spooled = self._delivered = self._failures = 0
        self._writing = 0  # taken off the queue by the writer, not yet committed
        self._writer_asleep = False  # waiting for a wake-up rather than looking now and then
        self._spool_depth = spool.depth()
        self._broker_available = False

        # Daemons, so a forgotten close() cannot hang interpreter exit; close() is the contract.
        self._writer = threading.Thread(
            target=self._write_loop, name="event-spool-writer", daemon=True
        )
        self._sender = threading.Thread(
            target=self._deliver_loop, name="event-delivery", daemon=True
        )
        self._writer.start()
        if bootstrap_servers is not None:  # None: spool only, delivered by a later publisher
            self._sender.start()

    @classmethod
    def from_settings(
        cls,
        settings: KafkaSettings,
        spool_path: Path,
        bootstrap_servers: str | None = None,
        **kwargs: Any,
    ) -> KafkaEventPublisher:
        """A publisher for ``settings.events_topic`` spooling to ``spool_path``.

        ``bootstrap_servers`` overrides the setting; with neither, events are only spooled.
        """
        bootstrap = bootstrap_servers or settings.bootstrap_servers
        return cls(
            bootstrap,
            settings.events_topic,
            EventSpool(spool_path),
            partitions=settings.partitions,
            **kwargs,
        )

    # -- accepting events ---------------------------------------------------------------------

    def publish(self, event: EventBase) -> None:
        """Queue ``event`` in memory and return at once; the writer spools it shortly after."""
        self._enqueue(event, None)

    def publish_durable(self, event: EventBase, timeout: float | None = None) -> None:
        """Return once ``event`` is committed (fsync'd) to the spool."""
        future: Future[None] = Future()
        self._enqueue(event, future)
        wait = self._durable_timeout if timeout is None else timeout
        try:
            future.result(wait)
        except TimeoutError as exc:
            raise PublisherError(
                f"event {event.event_id} was not spooled within {wait}s (durable_timeout)"
            ) from exc

    async def publish_durable_async(self, event: EventBase, timeout: float | None = None) -> None:
        """``publish_durable`` awaiting the writer's commit instead of blocking the loop."""
        future: Future[None] = Future()
        self._enqueue(event, future)
        wait = self._durable_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), wait)
        except TimeoutError as exc:
            raise PublisherError(
                f"event {event.event_id} was not spooled within {wait}s (durable_timeout)"
            ) from exc

    def _enqueue(self, event: EventBase, future: Future[None] | None) -> None:
        with self._cond:
            if self._closing:
                raise PublisherError(f"the event publisher for topic {self.topic} is closed")
            wake = future is not None or (self._writer_asleep and not self._queue)
            self._queue.append(_Queued(event, future))
            self._published += 1
            if wake:  # a durable caller waits, or the writer sleeps; else it looks soon
                self._cond.notify()

    # -- observing ----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Events accepted but not yet acknowledged by the broker (in memory or spooled)."""
        with self._cond:
            return len(self._queue) + self._writing + self._spool_depth

    @property
    def broker_available(self) -> bool:
        """Whether the last delivery attempt reached the broker."""
        return self._broker_available

    def stats(self) -> PublisherStats:
        """A consistent snapshot of the counters."""
        with self._cond:
            return PublisherStats(
                published=self._published,
                spooled=self._spooled,
                delivered=self._delivered,
                failures=self._failures,
                depth=len(self._queue) + self._writing + self._spool_depth,
                broker_available=self._broker_available,
                redelivered=self._redelivered,
            )

    # -- the writer: memory queue -> spool ----------------------------------------------------

    def _write_loop(self) -> None:
        pause = self._backoff_min
        quiet = 0  # looks in a row that found nothing
        while True:
            with self._cond:
                looked = False  # found events on a timed look: they gathered meanwhile
                while not self._queue and not self._closing:
                    self._writer_asleep = quiet >= _QUIET_LOOKS
                    self._cond.wait(None if self._writer_asleep else _LINGER_S)
                    looked, quiet = not self._writer_asleep, quiet + 1
                self._writer_asleep, quiet = False, 0
                if not looked and not self._closing and not any(q.future for q in self._queue):
                    self._cond.wait(_LINGER_S)  # gather decisions into one transaction
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), _MAX_COMMIT))]
                self._writing = len(batch)
            items, accepted = self._encode(batch)
            try:
                self._spool.append_many(items)
            except Exception as exc:  # the writer must outlive a failing disk
                pause = self._spool_failed(accepted, exc, pause)
                continue
            pause = self._backoff_min
            with self._cond:
                self._writing = 0
                self._spooled += len(items)
                self._spool_depth += len(items)
            for queued in accepted:
                _settle(queued.future)
            self._wake.set()

    def _encode(self, batch: list[_Queued]) -> tuple[list[tuple[str, bytes]], list[_Queued]]:
        items: list[tuple[str, bytes]] = []
        accepted: list[_Queued] = []
        for queued in batch:
            try:
                items.append((queued.event.task_id, encode_event(queued.event)))
            except (TypeError, ValueError) as exc:
                self._count_failure()
                logger.error("dropping unencodable event %s: %s", queued.event.event_id, exc)
                _settle(
                    queued.future,
                    PublisherError(f"event {queued.event.event_id} cannot be encoded: {exc}"),
                )
                continue
            accepted.append(queued)
        return items, accepted

    def _spool_failed(self, batch: list[_Queued], exc: Exception, pause: float) -> float:
        """Fail the durable callers (they answer 503), requeue the rest, back off."""
        self._count_failure()
        logger.warning("event spool write failed, retrying in %.1fs: %s", pause, exc)
        retry = []
        for queued in batch:
            if queued.future is None:
                retry.append(queued)
            else:
                _settle(queued.future, PublisherError(f"the event was not spooled: {exc}"))
        with self._cond:
            self._writing = 0
            if self._closing and time.monotonic() >= self._close_deadline:
                logger.error("closing with %d events that could not be spooled", len(retry))
                return pause
            self._queue.extendleft(reversed(retry))
            self._cond.wait(pause)
        return min(pause * 2, self._backoff_max)

    # -- the sender: spool -> Kafka -----------------------------------------------------------

    def _deliver_loop(self) -> None:
        pause = self._backoff_min
        try:
            while True:
                self._wake.clear()
                try:
                    self._check_cluster()  # before reading a batch, which a requeue changes
                    batch = self._next_batch()
                    if batch is None:
                        return
                    if not batch:
                        self._wake.wait(0.5)
                        continue
                    self._deliver(batch)
                except Exception as exc:  # the thread must outlive any broker or client error
                    self._drop_producer()
                    self._broker_available = False
                    self._count_failure()
                    logger.warning("event delivery failed, retrying in %.1fs: %r", pause, exc)
                    remaining = max(0.0, self._close_deadline - time.monotonic())
                    self._closing_event.wait(min(pause, remaining))
                    pause = min(pause * 2, self._backoff_max)
                else:
                    pause = self._backoff_min
        finally:
            self._drop_producer()

    def _next_batch(self) -> list[SpooledEvent] | None:
        """The oldest spooled events, or None once closing has nothing more to do."""
        with self._cond:
            closing, writer_done = self._closing, not self._writer.is_alive()
        try:
            batch = self._spool.pending(self._batch_size)
        except SpoolError as exc:
            self._count_failure()
            logger.warning("cannot read the event spool: %s", exc)
            batch = []
        if closing and (time.monotonic() >= self._close_deadline or (writer_done and not batch)):
            return None
        return batch

    def _deliver(self, batch: list[SpooledEvent]) -> None:
        """Send ``batch`` in order; mark the acknowledged prefix; raise if any record failed.

        Returns at once, sending nothing, when connecting requeued older events: the next
        batch starts with them, so each task's events keep their order.
        """
        if self._producer is None and self._connect_requeued():
            return
        producer = self._connect()
        results: list[KafkaError | bool | None] = [False] * len(batch)  # False: no answer yet

        def answered(index: int, error: KafkaError | None, message: object) -> None:
            results[index] = error

        for index, row in enumerate(batch):
            producer.produce(
                self.topic,
                key=row.key.encode(),
                value=row.payload,
                on_delivery=functools.partial(answered, index),
            )
        error = self._await_acks(producer)
        self._stop_if_abandoned()
        done = 0
        for result in results:
            if result is not None:  # failed, or still unanswered
                if error is None:
                    error = (
                        KafkaException(result)
                        if isinstance(result, KafkaError)
                        else TimeoutError("record not acknowledged")
                    )
                break
            done += 1
        if done:
            acked = self._spool.mark_delivered(batch[done - 1].seq, self._cluster_id, time.time())
            with self._cond:
                self._delivered += done
                self._spool_depth -= acked
        if error is not None:
            raise error
        self._broker_available = True

    def _await_acks(self, producer: Producer) -> BaseException | None:
        """Wait for the broker's acks; a broker silent for a second counts as unavailable."""
        started = time.monotonic()
        wait_at_most = self._producer_config["message.timeout.ms"] / 1000 + 1
        while True:
            # Read the close deadline each round: close() may come while we wait.
            give_up = min(started + wait_at_most, max(started + 0.1, self._close_deadline))
            try:
                if producer.flush(max(0.0, min(1.0, give_up - time.monotonic()))) == 0:
                    return None
            except Exception as exc:
                return exc
            self._broker_available = False
            if time.monotonic() >= give_up:
                return TimeoutError("the broker did not acknowledge the batch in time")

    def _connect_requeued(self) -> bool:
        """Connect; True when the cluster reached is a new one that got events requeued."""
        producer = Producer(
            {"bootstrap.servers": self.bootstrap_servers, **self._producer_config},
            logger=logger,
        )
        try:
            requeued = self._on_cluster(producer)
        except Exception:
            _discard(producer)
            raise
        self._producer = producer
        return requeued > 0

    def _connect(self) -> Producer:
        if self._producer is None:
            self._connect_requeued()
        assert self._producer is not None
        return self._producer

    def _check_cluster(self) -> None:
        """Now and then: notice a replaced cluster, forget rows delivered long enough ago.

        Only once the cluster is confirmed: while no broker answers, the delivered rows are
        kept, as the cluster that comes back may be a new, empty one that needs them again.
        """
        now = time.monotonic()
        if now - self._cluster_checked < _CLUSTER_CHECK_S or self._producer is None:
            return
        self._on_cluster(self._producer)
        forgotten = self._spool.forget_delivered(time.time() - self._retain_delivered)
        if forgotten:
            logger.debug("forgot %d delivered events", forgotten)

    def _on_cluster(self, producer: Producer) -> int:
        """Learn which cluster ``producer`` reaches; on a new one, requeue what the old one had.

        Returns how many delivered events were made pending again.

        A restarted memory-only broker (Tansu) comes back with a new cluster id and without
        topics: ours are created again, and the delivered rows still retained go out again
        (before anything newer, as they have lower seqs).
        """
        timeout = min(3.0, max(0.1, self._close_deadline - time.monotonic()))
        cluster_id = producer.list_topics(timeout=timeout).cluster_id or ""
        self._stop_if_abandoned()
        self._cluster_checked = time.monotonic()
        if cluster_id == self._cluster_id:
            return 0
        ensure_topics(self.bootstrap_servers, [self.topic], self.partitions)
        self._stop_if_abandoned()
        requeued = self._spool.redeliver_unless(cluster_id)
        if requeued:
            logger.warning(
                "cluster %r replaced %r: sending %d retained events again",
                cluster_id,
                self._cluster_id,
                requeued,
            )
        with self._cond:
            self._spool_depth += requeued
            self._redelivered += requeued
        self._cluster_id = cluster_id
        return requeued

    def _stop_if_abandoned(self) -> None:
        """Raise once close() has stopped waiting: the spool is another publisher's by then.

        Called after each call that may block past the close deadline, before the spool is
        touched, so a late sender never marks or requeues rows under a successor's feet.
        """
        if time.monotonic() >= self._close_deadline + _ABANDON_MARGIN_S / 2:
            raise PublisherError("closed while delivering; the spool is left as it was")

    def _drop_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            _discard(producer)

    def _count_failure(self) -> None:
        with self._cond:
            self._failures += 1

    # -- stopping -----------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Spool what is queued, deliver what the broker takes within ``timeout``, stop.

        Undelivered events stay in the spool file and are delivered by the next publisher
        opened on it. Closes the spool.
        """
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._close_deadline = time.monotonic() + timeout
            self._cond.notify_all()
        self._closing_event.set()
        self._writer.join(timeout)
        self._wake.set()
        if self._sender.ident is not None:
            self._sender.join(max(0.0, self._close_deadline - time.monotonic()) + _ABANDON_MARGIN_S)
        if self._writer.is_alive() or self._sender.is_alive():
            logger.error("event publisher threads did not stop in time; spool left open")
            return
        self._spool.close()

    def __enter__(self) -> KafkaEventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
