"""A full stack for benchmarks: Kafka-protocol broker, router and learner on one data dir.

``budget-router up`` starts all three on the same ``--data-dir`` and the same environment
(catalog, seed, lambda). The benchmark talks to the router over HTTP only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import BENCH_ADMIN_KEY, server_process
from learner.service import read_status
from router_service.embedded_broker import free_port

# Consumer-group joins take ~5 s with kafka-python's defaults, ~1 s with these.
FAST_CONSUMER_ENV = {
    "BUDGET_ROUTER_LEARNER_SESSION_TIMEOUT_MS": "2000",
    "BUDGET_ROUTER_LEARNER_HEARTBEAT_INTERVAL_MS": "500",
    "BUDGET_ROUTER_LEARNER_MAX_POLL_INTERVAL_MS": "2000",
    "BUDGET_ROUTER_LEARNER_CHECKPOINT_EVERY_SECONDS": "1",
    "BUDGET_ROUTER_LEARNER_PUBLISH_INTERVAL_SECONDS": "0.5",
    "BUDGET_ROUTER_MODEL_POLL_SECONDS": "0.5",
}


@dataclass(frozen=True)
class StackConfig:
    """What a benchmark varies: catalog, starting model, seed, lambda, extra environment."""

    data_dir: Path
    catalog_path: Path | None = None
    policy_model_path: Path | None = None
    seed: int = 0
    lambda_initial: float | None = None
    lambda_step: float | None = None
    task_credit_weight: float | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    api_key: str = BENCH_ADMIN_KEY

    def env(self) -> dict[str, str]:
        """The environment every process of the stack gets (besides the broker address)."""
        env = dict(FAST_CONSUMER_ENV)
        env["BUDGET_ROUTER_ADMIN_KEY"] = self.api_key
        env["BUDGET_ROUTER_SEED"] = str(self.seed)
        env["BUDGET_ROUTER_DATA_DIR"] = str(self.data_dir)
        if self.catalog_path is not None:
            env["BUDGET_ROUTER_CATALOG_PATH"] = str(self.catalog_path)
        if self.policy_model_path is not None:
            env["BUDGET_ROUTER_POLICY_MODEL_PATH"] = str(self.policy_model_path)
            env["BUDGET_ROUTER_LEARNER_MODEL_PATH"] = str(self.policy_model_path)
        for name, value in (
            ("LAMBDA_INITIAL", self.lambda_initial),
            ("LAMBDA_STEP", self.lambda_step),
            ("TASK_CREDIT_WEIGHT", self.task_credit_weight),
        ):
            if value is not None:
                env[f"BUDGET_ROUTER_LEARNER_{name}"] = repr(float(value))
        env.update(self.extra_env)
        return env


@dataclass
class RunningStack:
    """Where the running stack listens and how it was started."""

    port: int
    data_dir: Path
    mode: str
    api_key: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        """An HTTP client for the router, authenticated with the stack's admin key."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30.0,
        )

    def learner_status(self) -> dict[str, Any]:
        """The learner's last status file, or an empty dict before it wrote one."""
        return read_status(self.data_dir) or {}

    def wait_learned(self, steps: int, timeout_s: float = 30.0) -> dict[str, Any]:
        """Poll the learner's status until it learned ``steps`` steps or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        status = self.learner_status()
        while time.monotonic() < deadline and status.get("learned_steps", 0) < steps:
            time.sleep(0.2)
            status = self.learner_status()
        return status


@contextlib.contextmanager
def environment(extra: dict[str, str]) -> Iterator[None]:
    """Set environment variables for child processes started inside the block."""
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def full_stack(config: StackConfig) -> Iterator[RunningStack]:
    """``budget-router up`` (broker + router + learner) on ``config.data_dir``, for the block."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    script = str(Path(sys.executable).parent / "budget-router")
    port = free_port()
    with (
        environment(config.env()),
        server_process(
            [script, "up", "--port", str(port), "--data-dir", str(config.data_dir)],
            port,
            config.data_dir / "stack.log",
            ready_timeout_s=60.0,
        ),
    ):
        yield RunningStack(port, config.data_dir, "budget-router up", config.api_key)


def write_catalog(path: Path, models: list[dict[str, Any]]) -> Path:
    """Write a catalog file ``{"models": [...]}`` for ``BUDGET_ROUTER_CATALOG_PATH``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"models": models}, indent=1))
    return path
