"""A broker that fails the learner's calls (away, or restarting as a new cluster) is waited out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from feature_store.examples import task_closed_event
from learner.consumer import Record
from learner.service import Learner
from learner.settings import BrokerUnavailable, LearnerSettings
from learner.vw_model import ExplorationSpec, VWPolicyModel
from router_service.events import encode_event
from tests.learner.test_store_writer import Letters

Step = Callable[[], list[Record]]


class ScriptedConsumer:
    """Plays one step per poll (records, or a raised error); sets ``stop`` after the last."""

    topic = "events"

    def __init__(self, steps: list[Step], stop: threading.Event) -> None:
        self.steps, self.stop = steps, stop
        self.cluster_id = "cluster-a"
        self.restart_failures = 0
        self.restarts = 0

    def poll(self) -> list[Record]:
        step = self.steps.pop(0)
        if not self.steps:
            self.stop.set()
        return step()

    def restart_from_beginning(self) -> None:
        if self.restart_failures:
            self.restart_failures -= 1
            raise BrokerUnavailable("topics ['events']: cannot create (NoBrokersAvailable)")
        self.restarts += 1

    def lag(self, positions: dict[int, int]) -> int:
        return 0

    def commit(self, positions: dict[int, int]) -> None:
        return None


def away() -> list[Record]:
    raise BrokerUnavailable("topic 'events': poll failed (NodeNotReadyError)")


def learner(tmp_path: Path) -> Learner:
    settings = LearnerSettings(data_dir=tmp_path)
    return Learner(settings, VWPolicyModel.create(ExplorationSpec()), dead_letters=Letters())


def closed(task_id: str, offset: int) -> Step:
    return lambda: [Record(0, offset, encode_event(task_closed_event(task_id)))]


def test_failed_polls_are_retried_and_the_learner_goes_on_from_its_positions(
    tmp_path: Path,
) -> None:
    stop = threading.Event()
    consumer = ScriptedConsumer([closed("t1", 0), away, away, closed("t2", 1)], stop)
    running = learner(tmp_path)
    running.run(consumer, stop)  # type: ignore[arg-type]
    assert running.counters["broker_failures"] == 2
    assert running.counters["task_results"] == 2
    assert running.positions == {0: 2}
    assert running.status()["broker_failures"] == 2
    running.close()


def test_a_new_cluster_whose_topics_cannot_be_made_yet_is_followed_on_a_later_poll(
    tmp_path: Path,
) -> None:
    stop = threading.Event()
    consumer = ScriptedConsumer([closed("t1", 0), lambda: [], lambda: [], lambda: []], stop)
    running = learner(tmp_path)
    running.cluster_id = "cluster-a"

    def replaced() -> list[Record]:
        consumer.cluster_id = "cluster-b"
        consumer.restart_failures = 1
        return []

    consumer.steps[1] = replaced
    running.run(consumer, stop)  # type: ignore[arg-type]
    assert running.counters["broker_failures"] == 1  # the first restart failed ...
    assert consumer.restarts == 1  # ... the next poll's succeeded
    assert running.counters["cluster_changes"] == 1
    assert running.cluster_id == "cluster-b"
    running.close()
