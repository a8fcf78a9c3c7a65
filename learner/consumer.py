"""Kafka plumbing of the learner: the group consumer that resumes at checkpointed offsets,
and the dead-letter producer.

The consumer joins a consumer group with manual commits. On every partition assignment it
seeks to the learner's own positions (restored from the checkpoint) and, for a partition the
learner has never read, to the beginning: the checkpoint, not the group's committed offsets,
is the source of truth. Offsets are committed after each checkpoint only so that lag shows in
the usual Kafka tooling. One learner per group: it is the single writer of the model.

The positions hold for one cluster: when the broker reports another cluster id (the
memory-only embedded broker restarted, empty), :meth:`EventConsumer.restart_from_beginning`
drops them and reads the new log from its start.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, MutableMapping
from typing import Any, NamedTuple, Protocol

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from learner.settings import BrokerUnavailable, LearnerSettings

log = logging.getLogger(__name__)
METADATA_MAX_AGE_MS = 5_000


class Record(NamedTuple):
    """One message of the events topic (a tuple: thousands are made per poll)."""

    partition: int
    offset: int
    value: bytes | None


class DeadLetterSink(Protocol):
    """Where events that cannot be learned from go, with the reason."""

    def send(self, payload: str, reason: str, source: dict[str, Any] | None) -> None: ...

    def flush(self) -> None: ...


def dead_letter_message(payload: str, reason: str, source: dict[str, Any] | None) -> bytes:
    """The dead-letter JSON: the original payload, the reason, and where it came from."""
    return json.dumps(
        {"reason": reason, "payload": payload, "source": source, "dead_lettered_at": time.time()}
    ).encode()


class KafkaDeadLetters:
    """Dead letters on a Kafka topic, keyed like the events (by task id when known)."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.topic = topic
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers,
                acks="all",
                linger_ms=5,
                allow_auto_create_topics=False,
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"dead-letter producer: cannot reach {bootstrap_servers}: {exc}"
            ) from exc

    def send(self, payload: str, reason: str, source: dict[str, Any] | None) -> None:
        key = None
        try:
            task_id = json.loads(payload).get("task_id")
            if isinstance(task_id, str):
                key = task_id.encode()
        except (ValueError, AttributeError):
            pass
        self._producer.send(self.topic, dead_letter_message(payload, reason, source), key=key)

    def flush(self) -> None:
        try:
            self._producer.flush(timeout=30)
        except KafkaError as exc:
            raise BrokerUnavailable(f"dead-letter topic {self.topic!r}: {exc}") from exc

    def close(self) -> None:
        self._producer.close(timeout=5)


class _SeekToPositions(ConsumerRebalanceListener):
    def __init__(self, consumer: EventConsumer) -> None:
        self._owner = consumer

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        pass

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._owner.seek_to_positions(list(assigned))


class EventConsumer:
    """The events topic through a consumer group, starting from the learner's positions.

    ``positions`` maps partition -> next offset to read; the learner updates it while it
    processes records, and this consumer seeks to it on every (re)assignment.
    """

    def __init__(self, settings: LearnerSettings, positions: MutableMapping[int, int]) -> None:
        self.topic = settings.topic
        self._topics = [settings.topic, settings.dead_letter_topic]
        self._bootstrap = settings.bootstrap_servers
        self._positions = positions
        self._poll_timeout_ms = settings.poll_timeout_ms
        self._max_records = settings.max_poll_records
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=settings.bootstrap_servers,
                group_id=settings.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=settings.max_poll_records,
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=settings.heartbeat_interval_ms,
                max_poll_interval_ms=settings.max_poll_interval_ms,
                request_timeout_ms=settings.request_timeout_ms,
                fetch_max_wait_ms=min(100, settings.poll_timeout_ms),
                max_partition_fetch_bytes=8 * 1024 * 1024,
                check_crcs=settings.check_crcs,
                # Fresh metadata every few seconds: a replaced cluster (a new cluster id)
                # shows within them, not after the default five minutes.
                metadata_max_age_ms=METADATA_MAX_AGE_MS,
                # Topics come from ensure_topics with their partition count. (Tansu ignores
                # this and creates a missing topic with 4 partitions on a metadata request;
                # that works too, as events are keyed by task.)
                allow_auto_create_topics=False,
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"bootstrap_servers {settings.bootstrap_servers!r}: cannot connect ({exc})"
            ) from exc
        self._consumer.subscribe([self.topic], listener=_SeekToPositions(self))

    def seek_to_positions(self, assigned: list[TopicPartition]) -> None:
        """Seek each assigned partition to the learner's position, or to its beginning."""
        fresh = []
        for tp in assigned:
            position = self._positions.get(tp.partition)
            if position is None:
                fresh.append(tp)
            else:
                self._consumer.seek(tp, position)
        if fresh:
            self._consumer.seek_to_beginning(*fresh)

    @property
    def cluster_id(self) -> str:
        """The id of the cluster the consumer's metadata comes from ("" before the first)."""
        # kafka-python keeps it on the client's metadata, refreshed before any fetch is sent.
        return self._consumer._client.cluster.cluster_id or ""

    def restart_from_beginning(self) -> None:
        """On a new cluster: create our topics if it lacks them, forget every position and
        read each assigned partition from its first offset."""
        from router_service.embedded_broker import ensure_topics

        try:
            ensure_topics(self._bootstrap, self._topics)
        except KafkaError as exc:
            raise BrokerUnavailable(f"topics {self._topics}: cannot create ({exc})") from exc
        self._positions.clear()
        assigned = list(self._consumer.assignment())
        if assigned:
            self._consumer.seek_to_beginning(*assigned)

    def poll(self) -> list[Record]:
        """The next batch, in offset order within each partition."""
        try:
            batches = self._consumer.poll(
                timeout_ms=self._poll_timeout_ms, max_records=self._max_records
            )
        except KafkaError as exc:
            # The fetcher may have moved past records it did not hand over: the learner's
            # positions stay the truth for the next poll.
            self.seek_to_positions(list(self._consumer.assignment()))
            raise BrokerUnavailable(f"topic {self.topic!r}: poll failed ({exc})") from exc
        records = []
        for tp in sorted(batches, key=lambda t: t.partition):
            records.extend(Record(tp.partition, r.offset, r.value) for r in batches[tp])
        return records

    def commit(self, positions: dict[int, int]) -> None:
        """Commit ``positions`` to the group (for lag monitoring; the checkpoint rules)."""
        offsets = {
            TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
            for p, o in positions.items()
        }
        if offsets:
            try:
                self._consumer.commit(offsets)
            except CommitFailedError as exc:
                # A rebalance took the partitions away (a long batch outlived the poll
                # interval); the next poll rejoins and seeks to the checkpointed positions.
                log.warning("offset commit skipped, the group is rebalancing: %s", exc)
            except KafkaError as exc:
                # The checkpoint already holds these positions: a broker that is away only
                # delays what the group tooling shows, so the learner keeps going.
                log.warning("offset commit to topic %r failed: %s", self.topic, exc)

    def lag(self, positions: dict[int, int]) -> int | None:
        """Messages behind the high watermarks of the assigned partitions, when known."""
        total = 0
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                return None
            total += max(0, high - positions.get(tp.partition, 0))
        return total

    def close(self) -> None:
        self._consumer.close(autocommit=False)
