"""Duplicate, late and unknown events arriving by the broker: counted once, or dead-lettered.

A seeded stream of 20 simulated tasks goes through the real broker to the learner and its
DuckDB store, with faults mixed in: a redelivered outcome and a redelivered correction (same
``event_id``), a second outcome for a decision (new ``event_id``), an outcome that arrives
after its decision's join window, and an outcome and a correction for decisions nobody made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_store.store import DuckDBFeatureStore
from learner.service import read_status
from router_service.embedded_broker import EmbeddedBroker
from router_service.events import AnyEvent, CorrectionEvent, OutcomeEvent
from tests.kafka_helpers import consume_all, running_learner, wait_until
from tests.learner.test_learner_kafka import as_messages, learner_settings, publish
from tests.learner.test_learning_shift import STEPS, router_settings, simulate

pytestmark = pytest.mark.integration

TASKS, SEED = 20, 31
WINDOW_S = 60.0  # event time; tasks start 30 s apart, so the stream spans ten windows


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


def outcome_of(events: list[AnyEvent], decision_id: str) -> OutcomeEvent:
    return next(e for e in events if isinstance(e, OutcomeEvent) and e.decision_id == decision_id)


def faulty_stream(events: list[AnyEvent]) -> list[AnyEvent]:
    """``events`` with the faults placed where they show (the window is 60 s of event time)."""
    late = outcome_of(events, f"dec-{SEED}-0-0")
    redelivered = outcome_of(events, f"dec-{SEED}-2-1")
    second = outcome_of(events, f"dec-{SEED}-1-0").model_copy(
        update={"event_id": "ev-second-outcome", "quality": 0.0}
    )
    correction = CorrectionEvent(
        event_id="ev-correction",
        task_id=redelivered.task_id,
        occurred_at=redelivered.occurred_at,
        decision_id=redelivered.decision_id,
        rating="up",
    )
    unknown_outcome = outcome_of(events, f"dec-{SEED}-0-1").model_copy(
        update={"event_id": "ev-unknown-outcome", "decision_id": "dec-nobody-made"}
    )
    unknown_correction = correction.model_copy(
        update={"event_id": "ev-unknown-correction", "decision_id": "dec-nobody-made-either"}
    )
    stream = [e for e in events if e is not late]
    at_task = {int(e.task_id.rsplit("-", 1)[1]): i for i, e in reversed(list(enumerate(stream)))}
    for index, fault in sorted(
        [
            (at_task[3], late),  # decision at 0 s, outcome read at ~90 s: beyond the window
            (at_task[3], redelivered),
            (at_task[3], second),
            (at_task[3], correction),
            (at_task[4], correction),
            (at_task[1], unknown_outcome),
            (len(stream), unknown_correction),  # last, and already far behind the stream
        ],
        key=lambda pair: pair[0],
        reverse=True,
    ):
        stream.insert(index, fault)
    return stream


def test_duplicates_count_once_and_late_or_unknown_events_are_dead_lettered(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = learner_settings(broker, tmp_path, join_window_seconds=WINDOW_S)
    stream = faulty_stream(list(simulate(TASKS, seed=SEED)))
    publish(broker.bootstrap, settings.topic, as_messages(stream))

    store = DuckDBFeatureStore(settings.feature_store_path)
    with running_learner(settings, router_settings=router_settings(), store=store):
        wait_until(
            lambda: (
                (read_status(tmp_path) or {}).get("consumed") == len(stream)
                and read_status(tmp_path)["uncheckpointed_events"] == 0
            ),  # type: ignore[index]
            timeout=30,
            message=f"the learner to consume and checkpoint all {len(stream)} events",
        )
    status = read_status(tmp_path)
    assert status is not None

    assert status["learned_steps"] == TASKS * len(STEPS) - 1  # all but the late one
    assert status["learned_corrections"] == 1
    assert status["duplicates"] == 2  # the redelivered outcome and correction
    assert status["duplicate_outcomes"] == 1
    assert status["late"] == 1
    letters = consume_all(broker.bootstrap, settings.dead_letter_topic, 5)
    reasons = sorted(json.loads(letter.value)["reason"] for letter in letters)
    assert status["dead_lettered"] == len(letters) == 5
    assert reasons == sorted(
        [
            f"late: decision 'dec-{SEED}-0-0' was 2.0s earlier, beyond the 60s join window",
            f"no outcome for decision 'dec-{SEED}-0-0' within the join window",
            "no decision 'dec-nobody-made' arrived within the join window",
            "no decision 'dec-nobody-made-either' arrived within the join window",
            f"second outcome for decision 'dec-{SEED}-1-0'",
        ]
    )
    payloads = {json.loads(json.loads(letter.value)["payload"])["event_id"] for letter in letters}
    assert payloads == {
        f"ev-dec-{SEED}-0-0",
        f"ev-out-dec-{SEED}-0-0",
        "ev-second-outcome",
        "ev-unknown-outcome",
        "ev-unknown-correction",
    }

    with DuckDBFeatureStore(settings.feature_store_path, read_only=True) as reader:
        counts = reader.counts()
        steps = reader.logged_steps()
    # The store records what happened, once: every event by its id, a decision's first
    # outcome only. The late outcome is that decision's first, so its step is there (for
    # offline replay and spend) though the online learner, past its window, did not learn it.
    assert counts == {
        "decisions": TASKS * len(STEPS),
        "outcomes": TASKS * len(STEPS) + 1,  # with the one for a decision nobody made
        "corrections": 2,
        "tasks": TASKS,
    }
    assert len(steps) == len({s.decision_id for s in steps}) == TASKS * len(STEPS)
    first = next(s for s in steps if s.decision_id == f"dec-{SEED}-1-0")
    assert first.quality != 0.0  # the second outcome did not replace the first
