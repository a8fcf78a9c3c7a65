"""The learner against the real (embedded Tansu) broker: end to end, dead letters, SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from learner.checkpoint import Checkpoint, read_checkpoint
from learner.service import NoStore, read_status, run_learner
from learner.settings import LearnerSettings
from learner.vw_model import VWPolicyModel
from router_service.embedded_broker import EmbeddedBroker, ensure_topics
from router_service.events import AnyEvent, encode_event
from tests.kafka_helpers import consume_all, wait_until
from tests.learner.test_learning_shift import (
    CANDIDATES,
    prior_policy,
    router_settings,
    simulate,
    step_context,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
FAST_GROUP = {
    "session_timeout_ms": 2_000,
    "heartbeat_interval_ms": 500,
    "max_poll_interval_ms": 2_000,
    "request_timeout_ms": 5_000,
    "poll_timeout_ms": 100,
    "status_every_seconds": 0.05,
}


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


def learner_settings(broker: EmbeddedBroker, data_dir: Path, **overrides: Any) -> LearnerSettings:
    name = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "bootstrap_servers": broker.bootstrap,
        "topic": f"events-{name}",
        "dead_letter_topic": f"dead-{name}",
        "group_id": f"learner-{name}",
        **FAST_GROUP,
    }
    values.update(overrides)
    settings = LearnerSettings(**values)
    ensure_topics(broker.bootstrap, [settings.topic, settings.dead_letter_topic])
    return settings


def publish(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for key, value in messages:
            producer.send(topic, value, key=key)
        producer.flush(timeout=30)
    finally:
        producer.close()


def as_messages(events: list[AnyEvent]) -> list[tuple[bytes, bytes]]:
    return [(e.task_id.encode(), encode_event(e)) for e in events]


def probe_pmfs(model: VWPolicyModel) -> list[list[float]]:
    pmfs = []
    for kind, step_type in (("control", "planning"), ("execution", "extraction")):
        for tokens in range(500, 20_000, 1_500):
            for domain in ("eng", "ops"):
                _, shared, actions, _ = step_context(kind, step_type, tokens, domain)
                pmfs.append(model.predict(shared, actions))
    return pmfs


def canonical(model_bytes: bytes) -> bytes:
    """The model saved after a reload: VW resets its per-run counters on load."""
    return VWPolicyModel.from_bytes(model_bytes).to_bytes()


def committed(settings: LearnerSettings) -> int | None:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.group_id,
        enable_auto_commit=False,
    )
    try:
        return consumer.committed(TopicPartition(settings.topic, 0))
    finally:
        consumer.close()


def test_events_change_the_model_and_bad_ones_reach_the_dead_letter_topic(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = learner_settings(broker, tmp_path, publish_interval_seconds=0.0)
    events = list(simulate(20, seed=5))
    messages = as_messages(events)
    messages.insert(10, (b"t-bad", b'{"type": "decision", "task_id": "t-bad"}'))
    messages.insert(20, messages[5])  # a redelivered event
    publish(broker.bootstrap, settings.topic, messages)

    published: list[tuple[bytes, dict[str, Any], int]] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=run_learner,
        args=(settings, stop),
        kwargs={
            "router_settings": router_settings(),
            "store": NoStore(),
            "on_model_updated": lambda get, state, n, behind: published.append((get(), state, n)),
        },
    )
    thread.start()
    try:
        wait_until(
            lambda: (
                (read_status(tmp_path) or {}).get("consumed") == len(messages)
                and read_status(tmp_path)["uncheckpointed_events"] == 0
            ),  # type: ignore[index]
            timeout=30,
            message="the learner to consume and checkpoint every message",
        )
    finally:
        stop.set()
        thread.join(timeout=30)
    status = read_status(tmp_path)
    assert status is not None
    assert status["learned_steps"] == 20 * 3
    assert status["duplicates"] == 1
    assert status["dead_lettered"] == 1
    assert status["consumer_lag"] == 0
    assert set(status["lambdas"]) == {"eng"}

    checkpoint = read_checkpoint(settings.checkpoint_path)
    assert checkpoint is not None and checkpoint.offsets == {0: len(messages)}
    assert committed(settings) == len(messages)
    assert probe_pmfs(VWPolicyModel.from_bytes(checkpoint.model)) != probe_pmfs(
        prior_policy().model
    )
    assert published and published[-1][0] and published[-1][1]["domains"]["eng"]["tasks"] == 20

    [letter] = consume_all(broker.bootstrap, settings.dead_letter_topic, 1)
    body = json.loads(letter.value)
    assert body["payload"] == '{"type": "decision", "task_id": "t-bad"}'
    assert body["reason"].startswith("invalid event: decision.decision_id: Field required")
    assert body["source"] == {"topic": settings.topic, "partition": 0, "offset": 10}
    assert letter.key == b"t-bad"


def start_learner(
    settings: LearnerSettings, log: Path, *, store: bool = False, **overrides: str
) -> subprocess.Popen[bytes]:
    """``python -m learner`` on ``settings``; ``overrides`` are ``BUDGET_ROUTER_LEARNER_*``."""
    env = dict(os.environ)
    env.update(
        {
            "BUDGET_ROUTER_PRIOR_EXAMPLES_PER_KIND": "10",
            "BUDGET_ROUTER_SEED": "7",
            "BUDGET_ROUTER_EXPLORATION__EPSILON": "0.3",
            "BUDGET_ROUTER_LEARNER_CHECKPOINT_EVERY_EVENTS": "250",
            "BUDGET_ROUTER_LEARNER_MAX_POLL_RECORDS": "100",
            **{
                f"BUDGET_ROUTER_LEARNER_{k.upper()}": str(v)
                for k, v in {**FAST_GROUP, **overrides}.items()
            },
        }
    )
    command = [sys.executable, "-m", "learner", "--log-level", "WARNING"]
    command += [] if store else ["--no-store"]
    command += ["--data-dir", str(settings.data_dir), "--topic", settings.topic]
    command += ["--bootstrap-servers", settings.bootstrap_servers, "--group-id", settings.group_id]
    command += ["--dead-letter-topic", settings.dead_letter_topic]
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=out)


def final_checkpoint(
    settings: LearnerSettings, total: int, process: subprocess.Popen[bytes]
) -> Checkpoint:
    def done() -> bool:
        assert process.poll() is None, "the learner exited"
        checkpoint = read_checkpoint(settings.checkpoint_path)
        return checkpoint is not None and checkpoint.offsets.get(0) == total

    wait_until(done, timeout=60, message=f"a checkpoint at offset {total}")
    checkpoint = read_checkpoint(settings.checkpoint_path)
    assert checkpoint is not None
    return checkpoint


def test_sigkill_at_a_random_moment_loses_nothing_and_learns_nothing_twice(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    rng = random.Random(20250101)
    killed = learner_settings(broker, tmp_path / "killed")
    steady = learner_settings(
        broker, tmp_path / "steady", topic=killed.topic, dead_letter_topic=killed.dead_letter_topic
    )
    events = list(simulate(400, seed=8))
    messages = as_messages(events)
    for _ in range(20):  # redeliveries, a little after the original
        original = rng.randrange(len(messages) - 50)
        messages.insert(original + rng.randrange(1, 50), messages[original])
    messages.insert(rng.randrange(len(messages)), (b"t-x", b"not json"))
    chunks = [messages[i : i + 100] for i in range(0, len(messages), 100)]
    kill_after = rng.randrange(3, len(chunks) - 3)
    threshold = rng.randrange(200, 100 * kill_after)

    victim = start_learner(killed, tmp_path / "killed.log")
    try:
        for index, chunk in enumerate(chunks):
            publish(broker.bootstrap, killed.topic, chunk)
            if index == kill_after:
                wait_until(
                    lambda: (read_status(killed.data_dir) or {}).get("consumed", 0) >= threshold,
                    timeout=30,
                    message=f"the learner to consume {threshold} events",
                )
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=10)
        resumed_from = read_checkpoint(killed.checkpoint_path)
        assert resumed_from is not None and 0 < resumed_from.offsets[0] < len(messages)
        victim = start_learner(killed, tmp_path / "killed.log")
        witness = start_learner(steady, tmp_path / "steady.log")
        try:
            after_kill = final_checkpoint(killed, len(messages), victim)
            uninterrupted = final_checkpoint(steady, len(messages), witness)
        finally:
            witness.terminate()
            witness.wait(timeout=10)
    finally:
        victim.kill()
        victim.wait(timeout=10)

    assert after_kill.counters == uninterrupted.counters
    assert after_kill.counters["learned_steps"] == 400 * 3
    assert after_kill.counters["dead_lettered"] == 1
    assert after_kill.join["stats"]["duplicates"] == 20
    assert after_kill.join == uninterrupted.join
    assert after_kill.allocator == uninterrupted.allocator
    assert canonical(after_kill.model) == canonical(uninterrupted.model)
    assert probe_pmfs(VWPolicyModel.from_bytes(after_kill.model)) == probe_pmfs(
        VWPolicyModel.from_bytes(uninterrupted.model)
    )
    assert CANDIDATES  # probes are over the simulated candidates
