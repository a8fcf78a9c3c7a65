"""Helpers for tests that read what reached a topic of the real (embedded) broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from router_service.embedded_broker import EmbeddedBroker
from router_service.events import AnyEvent, decode_event


@contextmanager
def running_learner(settings: Any, **options: Any) -> Iterator[threading.Thread]:
    """:func:`learner.service.run_learner` in a thread until the block ends (then stopped)."""
    from learner.service import run_learner

    stop = threading.Event()
    thread = threading.Thread(target=run_learner, args=(settings, stop), kwargs=options)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=30)


@contextmanager
def managed_broker(port: int | None = None, *, start: bool = True) -> Iterator[EmbeddedBroker]:
    """An embedded broker (started unless ``start`` is False), stopped when the block ends."""
    broker = EmbeddedBroker(port=port)
    if start:
        broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def consume_all(
    bootstrap: str, topic: str, expected_count: int, timeout: float = 15.0
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning, polling until ``expected_count`` arrived.

    Reads without a consumer group (partitions assigned directly), so there is no group join
    to wait for. Returns what it has at the deadline, so callers assert on the count; records
    are ordered by partition, then offset.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        request_timeout_ms=5_000,
        consumer_timeout_ms=200,
    )
    deadline = time.monotonic() + timeout
    try:
        partitions = _wait_for(lambda: consumer.partitions_for_topic(topic), deadline)
        if not partitions:
            return []
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list[ConsumerRecord] = []
        while len(records) < expected_count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def consume_events(
    bootstrap: str, topic: str, expected_count: int, timeout: float = 15.0
) -> list[AnyEvent]:
    """``consume_all`` decoded into events, checking each record's key is its ``task_id``."""
    events = []
    for record in consume_all(bootstrap, topic, expected_count, timeout):
        event = decode_event(record.value)
        assert record.key == event.task_id.encode(), (record.key, event.task_id)
        events.append(event)
    return events


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    """Poll ``condition`` until it holds, or fail naming ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(0.02)


def _wait_for(probe: Callable[[], set[int] | None], deadline: float) -> set[int] | None:
    while True:
        found = probe()
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)
