"""``budget-router up``: broker, learner and router together, stopped cleanly on Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from router_service.embedded_broker import (
    EmbeddedBroker,
    die_with_parent,
    ensure_topics,
    stop_process,
)
from router_service.settings import Settings

log = logging.getLogger("budget_router.stack")


class Stack:
    """Child processes of one embedded deployment, started and stopped in order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker: EmbeddedBroker | None = None
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

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
        command = [sys.executable, "-m", "router_service.cli", *args]
        child = subprocess.Popen(command, env=env, preexec_fn=die_with_parent)
        self.children.append((name, child))

    def wait(self) -> int:
        """Block until a child exits or a signal asks us to stop; returns the exit code."""
        stopping = False

        def request_stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stopping:
            for name, child in self.children:
                if child.poll() is not None:
                    log.error("%s exited with code %s; stopping the stack", name, child.returncode)
                    return 1
            time.sleep(0.2)
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
