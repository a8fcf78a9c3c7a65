"""EventConsumer.commit: a rebalance or an absent broker skips the commit (the checkpoint
holds the positions), so a broker outage does not stop the learner."""

from __future__ import annotations

import logging

import pytest
from kafka.errors import CommitFailedError, KafkaConnectionError

from learner.consumer import EventConsumer


class _Refusing:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def commit(self, offsets: object) -> None:
        self.calls += 1
        raise self.error


def consumer_with(inner: _Refusing) -> EventConsumer:
    consumer = EventConsumer.__new__(EventConsumer)
    consumer.topic = "events"
    consumer._consumer = inner  # type: ignore[assignment]
    return consumer


def test_a_commit_refused_by_a_rebalance_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = _Refusing(CommitFailedError("kicked out of the group"))
    with caplog.at_level(logging.WARNING, logger="learner.consumer"):
        consumer_with(inner).commit({0: 10})
    assert inner.calls == 1
    assert "offset commit skipped, the group is rebalancing" in caplog.text


def test_a_commit_that_cannot_reach_the_broker_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = _Refusing(KafkaConnectionError("connection refused"))
    with caplog.at_level(logging.WARNING, logger="learner.consumer"):
        consumer_with(inner).commit({0: 10})
    assert inner.calls == 1
    assert "offset commit to topic 'events' failed: KafkaConnectionError" in caplog.text
