"""The event publisher against the real embedded broker: order, outages, restarts, durability."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from confluent_kafka import Producer

from router_service import publisher as publisher_module
from router_service.embedded_broker import EmbeddedBroker, free_port
from router_service.events import CorrectionEvent, EventBase, decode_event
from router_service.publisher import (
    EventPublisher,
    InMemoryPublisher,
    KafkaEventPublisher,
    PublisherError,
)
from router_service.settings import KafkaSettings
from router_service.spool import EventSpool, SpoolError
from tests.kafka_helpers import consume_events, managed_broker, wait_until

TOPIC = "budget-router.events"
pytestmark = [
    pytest.mark.integration,
    # kafka-python 3.0.12 leaks the socket of a refused connection (kafka/net/inet.py connect),
    # which a broker that is down produces on purpose here.
    pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
]


@pytest.fixture(autouse=True)
def _collect_leaked_sockets() -> Iterator[None]:
    """Collect the leaked sockets while this module's warning filter still applies."""
    yield
    gc.collect()


def event(task: str, index: int) -> CorrectionEvent:
    """A small event whose ``decision_id`` carries its position within the task."""
    return CorrectionEvent(task_id=task, decision_id=str(index), rating="up")


def open_publisher(bootstrap: str, spool_path: Path, **kwargs: object) -> KafkaEventPublisher:
    options: dict[str, object] = {"backoff": (0.05, 0.3), **kwargs}
    return KafkaEventPublisher(bootstrap, TOPIC, EventSpool(spool_path), **options)  # type: ignore[arg-type]


def assert_in_order_per_task(events: list[EventBase]) -> None:
    """Within each task, first occurrences (duplicates dropped) come in publishing order."""
    seen: set[str] = set()
    last: dict[str, int] = {}
    for item in events:
        if item.event_id in seen:
            continue
        seen.add(item.event_id)
        index = int(item.decision_id)  # type: ignore[attr-defined]
        assert index > last.get(item.task_id, -1), f"{item.task_id}: {index} after {last}"
        last[item.task_id] = index


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with managed_broker() as started:
        yield started


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "spool.sqlite3"


def test_in_memory_publisher_keeps_events_and_refuses_after_close() -> None:
    publisher: EventPublisher = InMemoryPublisher()
    publisher.publish(event("t", 0))
    publisher.publish_durable(event("t", 1))
    asyncio.run(publisher.publish_durable_async(event("t", 2)))
    assert [e.decision_id for e in publisher.events] == ["0", "1", "2"]  # type: ignore[attr-defined]
    publisher.close()
    with pytest.raises(PublisherError, match="closed"):
        publisher.publish(event("t", 3))


def test_kafka_settings_defaults() -> None:
    settings = KafkaSettings()
    assert settings.bootstrap_servers is None
    assert (settings.events_topic, settings.dead_letter_topic, settings.partitions) == (
        "budget-router.events",
        "budget-router.dead-letter",
        1,
    )


def test_published_events_reach_the_topic_in_order_keyed_by_task(
    broker: EmbeddedBroker, spool_path: Path
) -> None:
    tasks = ["a", "b", "c"]
    published = [event(task, i) for i in range(20) for task in tasks]
    with open_publisher(broker.bootstrap, spool_path) as publisher:
        for item in published:
            publisher.publish(item)
        wait_until(lambda: publisher.depth == 0, 15, "delivery of every event")
        stats = publisher.stats()
    assert (stats.published, stats.delivered, stats.broker_available) == (60, 60, True)
    consumed = consume_events(broker.bootstrap, TOPIC, len(published))
    assert [e.event_id for e in consumed] == [e.event_id for e in published]
    assert_in_order_per_task(consumed)


def test_publish_durable_returns_once_the_event_is_in_the_spool_file(spool_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    publisher = open_publisher(nowhere, spool_path)
    try:
        with EventSpool(spool_path) as reader:
            first, second = event("t", 0), event("t", 1)
            publisher.publish_durable(first)
            assert [decode_event(r.payload).event_id for r in reader.pending(10)] == [
                first.event_id
            ]
            asyncio.run(publisher.publish_durable_async(second))
            rows = reader.pending(10)
            assert [r.key for r in rows] == ["t", "t"]
            assert decode_event(rows[1].payload).event_id == second.event_id
    finally:
        publisher.close(timeout=0.2)


def test_broker_down_at_start_spools_then_delivers_when_it_starts(spool_path: Path) -> None:
    port = free_port()
    published = [event(f"t{i % 4}", i) for i in range(200)]
    publisher = open_publisher(f"127.0.0.1:{port}", spool_path)
    with managed_broker(port, start=False) as broker:
        try:
            started = time.perf_counter()
            for item in published:
                publisher.publish(item)
            assert time.perf_counter() - started < 0.5, "publish() must not wait for the broker"
            wait_until(lambda: publisher.stats().spooled == 200, 10, "every event to be spooled")
            assert publisher.depth == 200
            assert not publisher.broker_available
            broker.start()
            wait_until(lambda: publisher.depth == 0, 20, "delivery after the broker started")
            assert publisher.broker_available
        finally:
            # Closing the client first lets the broker stop at once instead of after 5 s.
            publisher.close()
        consumed = consume_events(broker.bootstrap, TOPIC, len(published))
    assert {e.event_id for e in consumed} == {e.event_id for e in published}
    assert_in_order_per_task(consumed)


class Allowance:
    """How many events each producer thread may have published so far; raised by the test."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._limit = 0

    def raise_to(self, limit: int) -> None:
        with self._cond:
            self._limit = limit
            self._cond.notify_all()

    def wait_for(self, index: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: index < self._limit, timeout=30)


def test_broker_restart_while_threads_publish_loses_nothing(spool_path: Path) -> None:
    port = free_port()
    broker = EmbeddedBroker(port=port).start()
    allowance = Allowance()
    workers_count, per_thread = 4, 150
    published: list[list[CorrectionEvent]] = [[] for _ in range(workers_count)]

    def produce(worker: int, publisher: KafkaEventPublisher) -> None:
        for i in range(per_thread):
            allowance.wait_for(i)
            item = event(f"task-{worker}", i)
            if i % 10 == 0:
                publisher.publish_durable(item)
            else:
                publisher.publish(item)
            published[worker].append(item)

    try:
        with open_publisher(broker.bootstrap, spool_path, batch_size=50) as publisher:
            workers = [
                threading.Thread(target=produce, args=(n, publisher), name=f"producer-{n}")
                for n in range(workers_count)
            ]
            for worker in workers:
                worker.start()
            allowance.raise_to(50)
            wait_until(lambda: publisher.stats().published == 200, 15, "the first events")
            # Everything acknowledged before the stop must be read before it: a memory-only
            # broker forgets what it had, which is no fault of the publisher.
            wait_until(lambda: publisher.depth == 0, 15, "delivery before the stop")
            before = consume_events(broker.bootstrap, TOPIC, 200)
            broker.stop()
            allowance.raise_to(100)
            wait_until(
                lambda: publisher.depth >= 200, 15, "events spooled while the broker is down"
            )
            wait_until(lambda: not publisher.broker_available, 15, "the outage to show")
            # The producers keep going while the broker restarts and the backlog drains.
            allowance.raise_to(per_thread)
            broker = EmbeddedBroker(port=port).start()
            for worker in workers:
                worker.join(30)
            wait_until(lambda: publisher.depth == 0, 20, "delivery after the restart")
            assert publisher.stats().failures > 0
            # The restarted broker is a new cluster: what the old one took is sent again.
            assert publisher.stats().redelivered == 200
            after = consume_events(broker.bootstrap, TOPIC, workers_count * per_thread)
    finally:
        broker.stop()
    every = {e.event_id for worker_events in published for e in worker_events}
    assert len(every) == workers_count * per_thread
    assert {e.event_id for e in before} | {e.event_id for e in after} == every
    assert_in_order_per_task(before)
    assert_in_order_per_task(after)


def test_spooled_events_survive_a_router_restart(spool_path: Path) -> None:
    port = free_port()
    published = [event("t", i) for i in range(30)]
    first = open_publisher(f"127.0.0.1:{port}", spool_path)
    for item in published[:-1]:
        first.publish(item)
    first.publish_durable(published[-1])
    first.close(timeout=0.3)
    with EventSpool(spool_path) as reader:
        assert reader.depth() == 30
    with managed_broker(port) as broker, open_publisher(broker.bootstrap, spool_path) as second:
        assert second.depth == 30
        wait_until(lambda: second.depth == 0, 20, "delivery of the spool left by the first run")
        consumed = consume_events(broker.bootstrap, TOPIC, 30)
    assert [e.event_id for e in consumed] == [e.event_id for e in published]


def test_a_sender_that_outlives_close_leaves_the_spool_alone(
    broker: EmbeddedBroker, spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked, release = threading.Event(), threading.Event()

    class HeldProducer(Producer):
        """Holds the first metadata request until the test lets it go, as a slow broker may."""

        def list_topics(self, *args: object, **kwargs: object) -> object:
            asked.set()
            release.wait(30)
            return super().list_topics(*args, **kwargs)

    monkeypatch.setattr(publisher_module, "Producer", HeldProducer)
    publisher = open_publisher(broker.bootstrap, spool_path)
    for index in range(5):
        publisher.publish(event("t", index))
    wait_until(asked.is_set, 15, "the sender to ask for the cluster")
    publisher.close(timeout=0.1)
    assert publisher._sender.is_alive(), "close gave up while the sender was held"
    release.set()
    publisher._sender.join(30)
    assert not publisher._sender.is_alive()
    with EventSpool(spool_path) as reader:
        assert reader.depth() == 5, "a late sender marked rows that a successor now owns"


def test_close_delivers_what_is_queued(broker: EmbeddedBroker, spool_path: Path) -> None:
    published = [event("t", i) for i in range(100)]
    publisher = open_publisher(broker.bootstrap, spool_path)
    for item in published:
        publisher.publish(item)
    publisher.close(timeout=10)
    with EventSpool(spool_path) as reader:
        assert reader.depth() == 0
    consumed = consume_events(broker.bootstrap, TOPIC, 100)
    assert [e.event_id for e in consumed] == [e.event_id for e in published]


def test_a_closed_publisher_refuses_events(spool_path: Path) -> None:
    publisher = open_publisher(f"127.0.0.1:{free_port()}", spool_path)
    publisher.close(timeout=0.2)
    with pytest.raises(PublisherError, match="closed"):
        publisher.publish(event("t", 0))
    with pytest.raises(PublisherError, match="closed"):
        publisher.publish_durable(event("t", 0))


def test_publish_cost_and_durable_throughput(broker: EmbeddedBroker, spool_path: Path) -> None:
    """Measures the decision-path cost of publish() and group-committed durable throughput."""
    with open_publisher(broker.bootstrap, spool_path) as publisher:
        items = [event(f"t{i % 8}", i) for i in range(5_000)]
        started = time.perf_counter()
        for item in items:
            publisher.publish(item)
        publish_us = (time.perf_counter() - started) / len(items) * 1e6

        threads, per_thread = 16, 100

        def durable(worker: int) -> None:
            for i in range(per_thread):
                publisher.publish_durable(event(f"d{worker}", i))

        workers = [threading.Thread(target=durable, args=(n,)) for n in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        durable_per_s = threads * per_thread / (time.perf_counter() - started)
        wait_until(lambda: publisher.depth == 0, 30, "delivery of the measured events")
    print(f"\npublish(): {publish_us:.1f} us/call; publish_durable x16: {durable_per_s:.0f}/s")
    assert publish_us < 200
    assert durable_per_s > 500


class FailingSpool(EventSpool):
    """A real spool whose first ``failures`` appends fail, as on a full or broken disk."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def append_many(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        if self.failures > 0:
            self.failures -= 1
            raise SpoolError(f"disk full while writing {self.path}")
        return super().append_many(items)


def test_a_failed_spool_write_fails_the_durable_caller_and_retries_the_rest(
    spool_path: Path,
) -> None:
    spool = FailingSpool(spool_path, failures=1)
    publisher = KafkaEventPublisher(f"127.0.0.1:{free_port()}", TOPIC, spool, backoff=(0.05, 0.3))
    try:
        refused, kept = event("t", 0), event("t", 1)
        with pytest.raises(PublisherError, match="not spooled: disk full") as info:
            publisher.publish_durable(refused)
        assert info.value.retriable
        spool.failures = 2
        publisher.publish(kept)
        wait_until(lambda: publisher.stats().spooled == 1, 10, "the retried event to be spooled")
        assert publisher.stats().failures >= 3
        with EventSpool(spool_path) as reader:
            assert [decode_event(r.payload).event_id for r in reader.pending(10)] == [kept.event_id]
    finally:
        publisher.close(timeout=0.2)


def test_without_a_bootstrap_events_are_only_spooled(spool_path: Path) -> None:
    publisher = KafkaEventPublisher.from_settings(KafkaSettings(), spool_path)
    kept = event("t", 0)
    publisher.publish_durable(kept)
    publisher.close(timeout=0.2)
    with EventSpool(spool_path) as reader:
        assert [decode_event(r.payload).event_id for r in reader.pending(10)] == [kept.event_id]


class _CountedCondition:
    """The publisher's condition, counting the wake-ups publishing asks for."""

    def __init__(self, inner: threading.Condition) -> None:
        self._inner = inner
        self.notified = 0

    def __enter__(self) -> bool:
        return self._inner.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)

    def wait(self, timeout: float | None = None) -> bool:
        return self._inner.wait(timeout)

    def notify(self) -> None:
        self.notified += 1
        self._inner.notify()

    def notify_all(self) -> None:
        self._inner.notify_all()


def test_while_events_come_publishing_wakes_no_thread(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "_QUIET_LOOKS", 10**9)  # the writer never sleeps
    publisher = KafkaEventPublisher.from_settings(KafkaSettings(), spool_path)
    counted = publisher._cond = _CountedCondition(publisher._cond)  # type: ignore[assignment]
    for index in range(30):
        publisher.publish(event("t", index))
        time.sleep(0.002)
    wait_until(lambda: publisher.stats().spooled == 30, 10, "30 events spooled")
    publisher.close(timeout=1)
    assert counted.notified == 0


def test_a_writer_asleep_after_quiet_looks_is_woken_by_the_next_event(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "_QUIET_LOOKS", 2)
    publisher = KafkaEventPublisher.from_settings(KafkaSettings(), spool_path)
    counted = publisher._cond = _CountedCondition(publisher._cond)  # type: ignore[assignment]
    wait_until(lambda: publisher._writer_asleep, 5, "the writer to sleep")
    publisher.publish(event("t", 0))
    wait_until(lambda: publisher.stats().spooled == 1, 5, "the event spooled")
    publisher.close(timeout=1)
    assert counted.notified == 1


def test_from_settings_uses_the_topic_setting(broker: EmbeddedBroker, spool_path: Path) -> None:
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, events_topic="custom.events")
    published = event("t", 0)
    with KafkaEventPublisher.from_settings(settings, spool_path) as publisher:
        publisher.publish(published)
        wait_until(lambda: publisher.depth == 0, 15, "delivery")
    assert [e.event_id for e in consume_events(broker.bootstrap, "custom.events", 1)] == [
        published.event_id
    ]


def test_delivered_events_are_kept_while_no_broker_confirms_its_cluster(tmp_path: Path) -> None:
    """A broker down past the retention may come back empty: what it had must still be here."""
    path = tmp_path / "spool.sqlite3"
    with EventSpool(path) as spool:
        seqs = spool.append_many([("t1", b"{}"), ("t1", b"{}")])
        spool.mark_delivered(seqs[-1], "cluster-x", now=time.time() - 60)
        spool.append("t1", b"{}")  # pending: the publisher keeps trying to reach the broker
    publisher = open_publisher(f"127.0.0.1:{free_port()}", path, retain_delivered=1.0)
    try:
        wait_until(lambda: publisher.stats().failures >= 3, 30, "three failed connections")
    finally:
        publisher.close(timeout=0.5)
    with EventSpool(path) as spool:
        assert spool.redeliver_unless("cluster-y") == 2
        assert spool.depth() == 3
