"""Router processes for integration tests: ``budget-router serve`` or ``up``, awaited, stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from router_service.embedded_broker import stop_process
from tests.conftest import ADMIN_KEY


def router_env(**settings: str) -> dict[str, str]:
    """The environment of a router process: test admin key, a small prior, no broker."""
    env = {
        **os.environ,
        "BUDGET_ROUTER_ADMIN_KEY": ADMIN_KEY,
        "BUDGET_ROUTER_PRIOR_EXAMPLES_PER_KIND": "5",
        "BUDGET_ROUTER_LEARNER_TASK_CLOSE_WAIT_SECONDS": "0",
        **settings,
    }
    env.pop("BUDGET_ROUTER_KAFKA__BOOTSTRAP_SERVERS", None)
    return env


@contextmanager
def router_process(
    command: str, port: int, data_dir: Path, env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``budget-router <command>`` on ``port`` from ready to stopped (SIGTERM, then SIGKILL)."""
    argv = [sys.executable, "-m", "router_service.cli", command, "--port", str(port)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*argv, "--data-dir", str(data_dir)], env=env, stdout=log, stderr=log
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, log_path)
            yield process
        finally:
            stop_process(process, timeout=30)


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not become ready"
        time.sleep(0.1)


def wait_refused(url: str, timeout: float = 30) -> None:
    """Wait until nothing answers at ``url`` any more."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
        except httpx.TransportError:
            return
        assert time.monotonic() < deadline, f"{url} still answers"
        time.sleep(0.1)
