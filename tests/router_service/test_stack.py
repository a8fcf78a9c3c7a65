"""``budget-router up`` supervises its children: a learner that exits is started again."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from router_service import stack as stack_module
from router_service.settings import Settings
from router_service.stack import Stack
from tests.kafka_helpers import wait_until

EXIT_AT_ONCE = "import sys; sys.exit(3)"
RUN_UNTIL_STOPPED = "import time; time.sleep(300)"


class ScriptedStack(Stack):
    """Children are small Python programs: each start of a name runs its next script."""

    def __init__(self, scripts: dict[str, list[str]]) -> None:
        super().__init__(Settings())
        self.scripts = scripts
        self.started: list[str] = []
        for name in scripts:
            self._spawn(name, [], {})

    def _popen(self, name: str) -> subprocess.Popen[bytes]:
        self.started.append(name)
        return subprocess.Popen([sys.executable, "-c", self.scripts[name].pop(0)])


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_module, "LEARNER_RESTART_FIRST_S", 0.1)


def test_a_learner_that_exits_is_started_again_while_the_router_runs_on() -> None:
    stack = ScriptedStack(
        {
            "learner": [EXIT_AT_ONCE, EXIT_AT_ONCE, RUN_UNTIL_STOPPED],
            "router": [RUN_UNTIL_STOPPED],
        }
    )
    stopping = threading.Event()
    result: list[int] = []
    supervisor = threading.Thread(target=lambda: result.append(stack.supervise(stopping)))
    supervisor.start()
    try:
        wait_until(lambda: stack.learner_restarts == 2, 30, "the learner to be started twice more")
        router = dict(stack.children)["router"]
        assert router.poll() is None
    finally:
        stopping.set()
        supervisor.join(timeout=30)
        stack.stop()
    assert result == [0]
    assert stack.started == ["learner", "router", "learner", "learner"]


def test_a_router_that_exits_stops_the_stack() -> None:
    stack = ScriptedStack({"learner": [RUN_UNTIL_STOPPED], "router": [EXIT_AT_ONCE]})
    try:
        assert stack.supervise(threading.Event()) == 1
    finally:
        stack.stop()
    assert stack.started == ["learner", "router"]
