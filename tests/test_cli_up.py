"""``budget-router up``: the whole embedded stack starts, serves, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from router_service.embedded_broker import free_port
from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, budget, step

pytestmark = pytest.mark.integration


def test_up_serves_learns_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "BUDGET_ROUTER_ADMIN_KEY": ADMIN_KEY,
        "BUDGET_ROUTER_PRIOR_EXAMPLES_PER_KIND": "5",
        "BUDGET_ROUTER_LEARNER_PUBLISH_INTERVAL_SECONDS": "0.2",
        "BUDGET_ROUTER_LEARNER_TASK_CLOSE_WAIT_SECONDS": "0",
    }
    env.pop("BUDGET_ROUTER_KAFKA__BOOTSTRAP_SERVERS", None)
    command = [sys.executable, "-m", "router_service.cli", "up", "--port", str(port)]
    log = (tmp_path / "up.log").open("wb")
    stack = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path / "var")], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, headers=ADMIN_HEADERS, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                assert stack.poll() is None, (tmp_path / "up.log").read_text()[-2000:]
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "stack did not become ready"
                time.sleep(0.2)
            first = client.get("/readyz").json()["policy_version"]
            client.post("/v1/tasks", json={"task_id": "u", "task_type": "x", "budget": budget()})
            for _ in range(5):
                decision = client.post("/v1/decide", json={"task_id": "u", "step": step()}).json()
                report = {
                    "decision_id": decision["decision_id"],
                    "success": True,
                    "quality": 0.9,
                    "input_tokens": 100,
                    "output_tokens": 10,
                }
                assert client.post("/v1/outcomes", json=report).status_code == 202
            deadline = time.monotonic() + 60
            while client.get("/readyz").json()["policy_version"] == first:
                assert time.monotonic() < deadline, "no learned snapshot reached the router"
                time.sleep(0.2)
    finally:
        stack.send_signal(signal.SIGINT)
        code = stack.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text()[-2000:]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)
