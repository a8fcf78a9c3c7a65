"""``budget-router up``: broker, learner and router together, stopped cleanly on Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from router_service.embedded_broker import (
    EmbeddedBroker,
    die_with_parent,
    ensure_topics,
    stop_process,
)
from router_service.settings import Settings

log = logging.getLogger("budget_router.stack")
# A learner that exits is started again (it resumes from its checkpoint) while the router goes
# on deciding; the pause doubles with each exit, up to the cap, so a crash loop stays quiet.
LEARNER_RESTART_FIRST_S = 1.0
LEARNER_RESTART_MAX_S = 60.0


class Stack:
    """Child processes of one embedded deployment, started and stopped in order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker: EmbeddedBroker | None = None
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.learner_restarts = 0

    def start(self) -> None:
        settings = self.settings
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        bootstrap = settings.kafka.bootstrap_servers
        if bootstrap is None:
            self.broker = EmbeddedBroker(log_path=data_dir / "broker.log").start()
            bootstrap = self.broker.bootstrap
            log.info("embedded broker (Tansu) listening on %s", bootstrap)
        ensure_topics(
            bootstrap,
            [settings.kafka.events_topic, settings.kafka.dead_letter_topic],
            settings.kafka.partitions,
        )
        env["BUDGET_ROUTER_KAFKA__BOOTSTRAP_SERVERS"] = bootstrap
        common = ["--data-dir", str(data_dir)]
        self._spawn("learner", ["learn", *common], env)
        self._spawn("router", ["serve", "--port", str(settings.port), *common], env)

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self._commands[name] = (args, env)
        self.children.append((name, self._popen(name)))

    def _popen(self, name: str) -> subprocess.Popen[bytes]:
        args, env = self._commands[name]
        command = [sys.executable, "-m", "router_service.cli", *args]
        return subprocess.Popen(command, env=env, preexec_fn=die_with_parent)

    def wait(self) -> int:
        """Block until the router exits or a signal asks us to stop; returns the exit code."""
        stopping = threading.Event()
        signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
        signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
        return self.supervise(stopping)

    def supervise(self, stopping: threading.Event) -> int:
        """Watch the children until ``stopping`` is set (0) or the router exits (1); a learner
        that exits is started again after a pause."""
        restart_at: float | None = None
        while not stopping.wait(0.2):
            for index, (name, child) in enumerate(self.children):
                if child.poll() is None:
                    continue
                if name != "learner":
                    log.error("%s exited with code %s; stopping the stack", name, child.returncode)
                    return 1
                if restart_at is None:
                    pause = min(
                        LEARNER_RESTART_MAX_S, LEARNER_RESTART_FIRST_S * 2**self.learner_restarts
                    )
                    log.error(
                        "learner exited with code %s; starting it again in %.0f s",
                        child.returncode,
                        pause,
                    )
                    restart_at = time.monotonic() + pause
                elif time.monotonic() >= restart_at:
                    self.children[index] = (name, self._popen(name))
                    self.learner_restarts += 1
                    restart_at = None
        return 0

    def stop(self) -> None:
        for name, child in reversed(self.children):
            if not stop_process(child, timeout=15):
                log.warning("%s did not stop in 15 s; killed it", name)
        if self.broker is not None:
            self.broker.stop()


def run_stack(settings: Settings) -> int:
    stack = Stack(settings)
    try:
        stack.start()
        log.info("budget-router is up on http://%s:%s", settings.host, settings.port)
        return stack.wait()
    finally:
        stack.stop()
