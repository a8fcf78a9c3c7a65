"""SIGKILL the learner at six seeded points of a fixed event stream; it ends where one
uninterrupted run ends: the same VW model, and each step once in its DuckDB feature store."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_store.store import DuckDBFeatureStore
from learner.checkpoint import read_checkpoint
from learner.service import read_status
from learner.settings import LearnerSettings
from learner.vw_model import VWPolicyModel
from router_service.embedded_broker import EmbeddedBroker
from tests.kafka_helpers import wait_until
from tests.learner.test_learner_kafka import (
    as_messages,
    canonical,
    final_checkpoint,
    learner_settings,
    probe_pmfs,
    publish,
)
from tests.learner.test_learner_kafka import start_learner as learner_process
from tests.learner.test_learning_shift import STEPS, simulate

pytestmark = pytest.mark.integration

TASKS = 200
KILLS = 6
SEED = 20261202


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


def start_learner(settings: LearnerSettings, log: Path) -> subprocess.Popen[bytes]:
    """``python -m learner`` with its DuckDB store, small batches and frequent checkpoints."""
    return learner_process(
        settings, log, store=True, checkpoint_every_events="200", max_poll_records="25"
    )


def kill_after(process: subprocess.Popen[bytes], data_dir: Path, point: int, log: Path) -> int:
    """SIGKILL ``process`` once its status shows ``point`` events consumed; returns the count
    it showed last (the status is written every 50 ms, so the learner may be a little ahead)."""
    started = time.time()

    def reached() -> bool:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        status = read_status(data_dir) or {}
        return status.get("updated_at", 0) > started and status["consumed"] >= point

    wait_until(reached, 60, f"the learner to consume {point} events")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    return int((read_status(data_dir) or {})["consumed"])


def stored_steps(data_dir: Path) -> tuple[list[str], dict[str, int]]:
    with DuckDBFeatureStore(data_dir / "features.duckdb", read_only=True) as store:
        return [step.decision_id for step in store.logged_steps()], store.counts()


def test_six_seeded_sigkills_end_with_the_uninterrupted_model_and_store(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    killed = learner_settings(broker, tmp_path / "killed")
    steady = learner_settings(
        broker, tmp_path / "steady", topic=killed.topic, dead_letter_topic=killed.dead_letter_topic
    )
    messages = as_messages(list(simulate(TASKS, seed=SEED)))
    for _ in range(30):  # redeliveries of an event, a little after the original
        original = rng.randrange(len(messages) - 40)
        messages.insert(original + rng.randrange(1, 40), messages[original])
    publish(broker.bootstrap, killed.topic, messages)
    kill_points = sorted(rng.sample(range(100, len(messages) - 100), KILLS))

    log = tmp_path / "killed.log"
    witness = start_learner(steady, tmp_path / "steady.log")
    killed_at: list[int] = []
    resumed_from: list[int] = []
    try:
        for point in kill_points:
            victim = start_learner(killed, log)
            killed_at.append(kill_after(victim, killed.data_dir, point, log))
            checkpoint = read_checkpoint(killed.checkpoint_path)
            resumed_from.append(0 if checkpoint is None else checkpoint.offsets.get(0, 0))
        victim = start_learner(killed, log)
        try:
            after_kills = final_checkpoint(killed, len(messages), victim)
        finally:
            victim.terminate()
            victim.wait(timeout=30)
        uninterrupted = final_checkpoint(steady, len(messages), witness)
    finally:
        witness.terminate()
        witness.wait(timeout=30)
    print(f"kill points {kill_points}: killed at {killed_at}, resumed from {resumed_from}")

    assert resumed_from == sorted(resumed_from)  # no checkpoint ever went back
    assert resumed_from[-1] < len(messages)  # the last kill still left events to read
    # Some kills fell between checkpoints: events learned and stored were read a second time.
    assert any(at > offset for at, offset in zip(killed_at, resumed_from, strict=True))
    assert after_kills.counters["learned_steps"] == TASKS * len(STEPS)
    assert after_kills.counters == uninterrupted.counters
    assert after_kills.join == uninterrupted.join
    assert after_kills.allocator == uninterrupted.allocator
    assert canonical(after_kills.model) == canonical(uninterrupted.model)
    assert probe_pmfs(VWPolicyModel.from_bytes(after_kills.model)) == probe_pmfs(
        VWPolicyModel.from_bytes(uninterrupted.model)
    )
    steps, counts = stored_steps(killed.data_dir)
    assert len(steps) == len(set(steps)) == TASKS * len(STEPS)
    assert (steps, counts) == stored_steps(steady.data_dir)
