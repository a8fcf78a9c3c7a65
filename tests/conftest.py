"""Shared fixtures: settings in a temporary data directory and an app under TestClient."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from router_service.app import create_app
from router_service.embedded_broker import free_port
from router_service.settings import Settings
from tests.postgres_cluster import ALLOW_MISSING, PostgresCluster

ADMIN_KEY = "test-admin-key-0123456789abcdef"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var", prior_examples_per_kind=10, seed=7, admin_key=ADMIN_KEY
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=ADMIN_HEADERS) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A real PostgreSQL server for the whole session; missing binaries fail loudly."""
    try:
        cluster = PostgresCluster()
    except FileNotFoundError as exc:
        if os.environ.get(ALLOW_MISSING) == "1":
            pytest.skip(f"{exc} ({ALLOW_MISSING}=1)")
        pytest.fail(f"{exc}; set {ALLOW_MISSING}=1 to skip these tests instead")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_uri(postgres_cluster: PostgresCluster) -> str:
    """The URI of a fresh, empty database on the session's server."""
    return postgres_cluster.new_database()


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server on a free loopback port; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def budget(**overrides: float) -> dict[str, float]:
    values = {
        "total_dollars": 1.0,
        "max_input_tokens": 200_000,
        "max_output_tokens": 50_000,
        "reserve_for_final_synthesis": 0.1,
        "reserve_for_human_handoff": 0.05,
        "hard_stop_after_retries": 3,
    }
    values.update(overrides)
    return values


def step(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "kind": "execution",
        "type": "extraction",
        "input_tokens": 2_000,
        "expected_output_tokens": 300,
    }
    values.update(overrides)
    return values


def outcome(decision_id: str, **overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "decision_id": decision_id,
        "success": True,
        "quality": 0.9,
        "input_tokens": 1_500,
        "output_tokens": 200,
    }
    values.update(overrides)
    return values
