"""Hands-off model lifecycle on the real ``budget-router up``: outcomes in, champion out.

The whole embedded stack (Tansu broker, learner, router, SQLite MLflow registry, DuckDB) runs as
``budget-router up`` with a short schedule. Seeded decisions and outcomes go in over HTTP, one
model clearly better than the others. The test waits (polling, with deadlines, while traffic
keeps flowing) for the learner to register versions and the gate to promote a first champion
(the day-one prior, through the sanity gate) and a better one (off-policy gain over the first),
checks the router serves what the registry names, pins the champion and checks the gate then
moves nothing, rolls back with the CLI and checks the router swaps back, sees the gate pass a
challenger but hold it while pinned, and promote once unpinned.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from learner.registry import CHAMPION, ModelRegistry
from router_service.embedded_broker import free_port
from tests.conftest import ADMIN_HEADERS, budget, step
from tests.router_processes import router_env, router_process

pytestmark = pytest.mark.integration
T = TypeVar("T")
BEST = "gpt-4.1"  # the prior prefers gpt-5-nano for these steps: the learner must find it
CATALOG = [
    {
        "id": "gpt-5-nano",
        "provider": "openai",
        "tier": "small",
        "input_price_per_mtok": 0.05,
        "output_price_per_mtok": 0.4,
        "context_window": 272000,
    },
    {
        "id": "gpt-5-mini",
        "provider": "openai",
        "tier": "medium",
        "input_price_per_mtok": 0.25,
        "output_price_per_mtok": 2.0,
        "context_window": 272000,
    },
    {
        "id": "gpt-4.1",
        "provider": "openai",
        "tier": "large",
        "input_price_per_mtok": 2.0,
        "output_price_per_mtok": 8.0,
        "context_window": 1047576,
    },
]
TRUST = """version = "hands-off-test"
[domains.default]
allowed_models = []
max_exploration = 0.5
cost_weight = 1.0
confirmation_share = 0.5
min_tier = {}
"""
ROUND = 60  # outcomes learned per registration round
DEADLINE = 60.0  # seconds for each awaited condition


class Traffic:
    """Seeded agent steps over HTTP: five per task; ``BEST`` succeeds, the others mostly fail."""

    def __init__(self, client: httpx.Client, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.sent = 0
        self.first_outcome_at: float | None = None

    def send(self, n: int) -> None:
        for _ in range(n):
            task_id = f"task-{self.sent // 5}"
            if self.sent % 5 == 0:
                opened = self.client.post(
                    "/v1/tasks", json={"task_id": task_id, "task_type": "x", "budget": budget()}
                )
                assert opened.status_code == 201, opened.text
            decided = self.client.post("/v1/decide", json={"task_id": task_id, "step": step()})
            assert decided.status_code == 200, decided.text
            decision = decided.json()
            good = decision["model"] == BEST
            quality = (0.95 if good else 0.2) + self.rng.uniform(-0.05, 0.05)
            outcome = {
                "decision_id": decision["decision_id"],
                "success": good,
                "quality": round(quality, 4),
                "input_tokens": 2000,
                "output_tokens": 300,
            }
            assert self.client.post("/v1/outcomes", json=outcome).status_code == 202
            if self.first_outcome_at is None:
                self.first_outcome_at = time.monotonic()
            self.sent += 1


def wait_while_sending(traffic: Traffic, condition: Callable[[], T | None], what: str) -> T:
    """Poll ``condition`` until it holds, sending a few more steps between polls."""
    return wait_for(condition, f"{what} ({traffic.sent} sent)", between=lambda: traffic.send(10))


def wait_for(
    condition: Callable[[], T | None],
    what: str,
    between: Callable[[], object] = lambda: time.sleep(0.1),
) -> T:
    deadline = time.monotonic() + DEADLINE
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        between()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"models": CATALOG}))
    trust = tmp_path / "trust.toml"
    trust.write_text(TRUST)
    env = router_env(
        BUDGET_ROUTER_CATALOG_PATH=str(catalog),
        BUDGET_ROUTER_TRUST_POLICY_PATH=str(trust),
        BUDGET_ROUTER_EXPLORATION__EPSILON="0.5",
        BUDGET_ROUTER_SEED="11",
        BUDGET_ROUTER_MODEL_POLL_SECONDS="0.2",
        BUDGET_ROUTER_LEARNER_PUBLISH_INTERVAL_SECONDS="0.2",
        BUDGET_ROUTER_LEARNER_TASK_CREDIT_WEIGHT="0",
        BUDGET_ROUTER_LEARNER_SESSION_TIMEOUT_MS="6000",
        BUDGET_ROUTER_LEARNER_HEARTBEAT_INTERVAL_MS="500",
        BUDGET_ROUTER_LIFECYCLE_REGISTER_EVERY_STEPS=str(ROUND),
        BUDGET_ROUTER_LIFECYCLE_MIN_ROUND_SECONDS="0",
        BUDGET_ROUTER_LIFECYCLE_MIN_STEPS="40",
        BUDGET_ROUTER_LIFECYCLE_MIN_ESS="10",
        BUDGET_ROUTER_LIFECYCLE_MARGIN="0.05",
    )
    port, data_dir = free_port(), tmp_path / "var"
    with (
        router_process("up", port, data_dir, env, tmp_path / "up.log"),
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=ADMIN_HEADERS, timeout=30
        ) as client,
    ):
        yield client, data_dir


def lifecycle(client: httpx.Client) -> dict[str, Any] | None:
    """The admin view of the registry, or None before the learner has created it."""
    response = client.get("/v1/admin/champion")
    if response.status_code == 409:
        return None
    assert response.status_code == 200, response.text
    return response.json()


def serving(client: httpx.Client) -> dict[str, Any]:
    return client.get("/readyz").json()


def test_outcomes_promote_a_champion_that_an_operator_pins_and_rolls_back(
    stack: tuple[httpx.Client, Path],
) -> None:
    client, data_dir = stack
    traffic = Traffic(client, seed=5)

    def champion() -> str | None:
        view = lifecycle(client)
        return None if view is None else view["champion"]

    wait_for(lambda: serving(client)["learner_events"] is not None, "the learner to run")
    traffic.send(1)  # the learner's first publication registers the prior (day one)
    registered = wait_for(
        lambda: (view := lifecycle(client)) and view["challenger"], "a first registered version"
    )
    first = wait_while_sending(traffic, champion, "a first champion")
    assert first == registered, "the first version passes the sanity gate"
    first_at = time.monotonic() - (traffic.first_outcome_at or 0.0)
    sent_for_first = traffic.sent
    second = wait_while_sending(
        traffic, lambda: (c := champion()) != first and c, "a champion better than the first"
    )
    second_at = time.monotonic() - (traffic.first_outcome_at or 0.0)
    print(
        f"\nfirst champion v{first} {first_at:.1f} s after the first outcome ({sent_for_first}"
        f" steps sent); better champion v{second} at {second_at:.1f} s ({traffic.sent} sent)"
    )
    wait_for(
        lambda: (
            serving(client)["champion_version"] == second
            and str(serving(client)["policy_version"]).startswith(f"mlflow:{second}")
        ),
        f"the router to serve version {second}",
    )
    registry = ModelRegistry.embedded(data_dir)
    moves = [m for m in registry.history() if m.alias == CHAMPION]
    assert [(m.action, m.actor, m.to_version) for m in moves] == [
        ("promote", "promotion-gate", first),
        ("promote", "promotion-gate", second),
    ]
    assert "gate passed: pass samples" in moves[1].reason and "pass reward: gain" in moves[1].reason

    pinned = client.post("/v1/admin/champion/pin", json={"reason": "freeze for the test"})
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["pinned"]["version"] == second
    pin_actor = pinned.json()["pinned"]["actor"]
    # The challenger alias still names the second champion until the learner registers the
    # next version (right after the promotion, so before or just after the pin): gated after it.
    pending = wait_while_sending(
        traffic,
        lambda: (v := lifecycle(client)) and v["challenger"] != second and v["challenger"],
        "a challenger registered after the second champion",
    )
    tags = wait_while_sending(
        traffic,
        lambda: (t := registry.version_tags(pending)).get("gate.outcome") and t,
        f"the gate to decide version {pending} while pinned",
    )
    assert registry.get_alias_version(CHAMPION) == second
    assert tags["gate.outcome"] in ("refused", f"passed, champion pinned by {pin_actor}")

    command = [
        "rollback",
        "--data-dir",
        str(data_dir),
        "--actor",
        "ops",
        "--reason",
        "test rollback",
    ]
    rolled = subprocess.run(
        [sys.executable, "-m", "router_service.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rolled.returncode == 0, rolled.stderr
    assert f"champion: {second} -> {first} (rollback by ops: test rollback)" in rolled.stdout
    wait_for(
        lambda: (
            serving(client)["champion_version"] == first
            and str(serving(client)["policy_version"]).startswith(f"mlflow:{first}")
        ),
        f"the router to swap back to version {first}",
    )
    view = lifecycle(client)
    assert view is not None and view["champion"] == first and view["pinned"] is not None
    actions = [(m["action"], m["actor"]) for m in view["history"] if m["alias"] == CHAMPION]
    assert actions[-2:] == [("pin", pin_actor), ("rollback", "ops")]

    # Still pinned: the learner continues from the rolled-back champion, soon beats it again,
    # and the gate says so, but moves nothing until the pin is lifted.
    rolled_back_at = int(view["challenger"])
    held = f"passed, champion pinned by {pin_actor}"
    wait_while_sending(
        traffic,
        lambda: _gate_outcomes(client, registry, rolled_back_at).count(held),
        "a challenger that passes the gate while the champion is pinned",
    )
    assert registry.get_alias_version(CHAMPION) == first
    unpinned = client.post("/v1/admin/champion/unpin", json={"reason": "thaw"})
    assert unpinned.status_code == 200, unpinned.text
    third = wait_while_sending(
        traffic, lambda: (c := champion()) != first and c, "a promotion after the unpin"
    )
    last = [m for m in registry.history() if m.alias == CHAMPION][-1]
    assert (last.action, last.actor, last.to_version) == ("promote", "promotion-gate", third)
    print(f"{traffic.sent} steps sent in all; champion moves: {_moves(registry)}")


def _gate_outcomes(client: httpx.Client, registry: ModelRegistry, after: int) -> list[str]:
    """The gate outcomes recorded on the versions registered after version ``after``."""
    view = lifecycle(client)
    newest = int(view["challenger"]) if view else after
    tags = [registry.version_tags(str(v)) for v in range(after + 1, newest + 1)]
    return [t["gate.outcome"] for t in tags if "gate.outcome" in t]


def _moves(registry: ModelRegistry) -> list[str]:
    return [
        f"{m.action} {m.from_version}->{m.to_version} by {m.actor}"
        for m in registry.history()
        if m.alias == CHAMPION
    ]
