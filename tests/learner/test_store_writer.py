"""Store writes on the writer thread: in order, all of them before a flush returns, errors
raised on the learner's thread."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from feature_store.errors import StoreUnavailable
from feature_store.examples import task_closed_event
from learner.checkpoint import read_checkpoint
from learner.consumer import Record
from learner.service import Learner
from learner.settings import LearnerSettings
from learner.store_writer import BackgroundWriter
from learner.vw_model import ExplorationSpec, VWPolicyModel
from router_service.events import encode_event


class GatedStore:
    """Records batches; each write waits for ``gate`` and fails when told to."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.gate = threading.Event()
        self.fail_on: int | None = None

    def write_events(self, events: Sequence[Any]) -> None:
        self.gate.wait(timeout=30)
        if events and events[0] == self.fail_on:
            raise StoreUnavailable("disk gone")
        self.batches.append(list(events))


def test_flush_returns_once_every_batch_is_written_in_order() -> None:
    store = GatedStore()
    writer = BackgroundWriter(store, max_pending=8)
    for n in range(5):
        writer.write_events([n, n])
    assert store.batches == [], "the writes wait for the store"
    store.gate.set()
    writer.flush()
    assert store.batches == [[n, n] for n in range(5)]
    writer.close()


def test_a_failed_write_is_raised_by_the_next_call_and_nothing_after_it_is_written() -> None:
    store = GatedStore()
    store.fail_on, writer = 1, BackgroundWriter(store)
    store.gate.set()
    for n in range(3):
        writer.write_events([n])
    with pytest.raises(StoreUnavailable, match="disk gone"):
        writer.flush()
    assert store.batches == [[0]]
    with pytest.raises(StoreUnavailable):
        writer.write_events([9])
    with pytest.raises(StoreUnavailable):
        writer.close()


class Letters:
    def send(self, payload: str, reason: str, source: dict[str, Any] | None) -> None:
        raise AssertionError(f"unexpected dead letter: {reason}")

    def flush(self) -> None:
        return None


def test_a_checkpoint_waits_until_the_store_holds_every_event_it_counts(tmp_path: Path) -> None:
    store = GatedStore()
    settings = LearnerSettings(data_dir=tmp_path)
    learner = Learner(
        settings, VWPolicyModel.create(ExplorationSpec()), dead_letters=Letters(), store=store
    )
    closed = task_closed_event("t1", trust_domain="eng")
    learner.process([Record(0, 0, encode_event(closed))])
    checkpoint = threading.Thread(target=learner.checkpoint)
    checkpoint.start()
    checkpoint.join(timeout=0.5)
    assert checkpoint.is_alive() and not settings.checkpoint_path.exists()
    store.gate.set()
    checkpoint.join(timeout=30)
    assert [[e.event_id for e in batch] for batch in store.batches] == [[closed.event_id]]
    assert read_checkpoint(settings.checkpoint_path).offsets == {0: 1}  # type: ignore[union-attr]
    learner.close()
