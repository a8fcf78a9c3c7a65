"""Tenant isolation across every route of the app.

Tenant B opens a task, decides two steps, books one outcome and a correction. Then every route
the app has (enumerated from ``app.routes``, so a new route is walked too) is called with tenant
A's key and B's ids in its path and body. A route must refuse (404, or 403 for admin ones)
unless it is listed as serving no tenant data; and no answer may carry B's ids or data that A
did not send itself. Routes are refused by default: a new route that should answer a tenant
has to be added to ``ANSWERS_ANY_TENANT`` on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
import pytest
from fastapi.testclient import TestClient

from router_service.app import create_app
from router_service.settings import Settings
from tests.conftest import ADMIN_HEADERS, budget, outcome, step

ANSWERS_ANY_TENANT = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/dashboard"),
    ("GET", "/dashboard/{asset}"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
    ("GET", "/v1/dashboard/summary"),  # the caller's own activity only
    ("GET", "/v1/dashboard/decisions"),
}
"""Routes that answer A without refusing: they must still show nothing of B's."""
ID_TAKEN = {("POST", "/v1/tasks")}
"""Task ids are one namespace: reusing B's id is a 409 that says only that the id is taken."""
REFUSALS = {403, 404}


@dataclass(frozen=True)
class TenantB:
    """What tenant B owns, and what must never show in an answer to A."""

    task_id: str
    open_decision: str
    settled_decision: str
    key_id: str
    task_type: str = "globex-quarterly-forecast"
    tag: str = "globex-project-hush"

    @property
    def secrets(self) -> list[str]:
        ids = [self.task_id, self.open_decision, self.settled_decision, self.key_id]
        return [*ids, self.task_type, self.tag]


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def new_key(client: TestClient, tenant: str) -> dict[str, Any]:
    created = client.post(
        "/v1/admin/keys",
        json={"tenant": tenant, "trust_domains": ["*"]},
        headers=ADMIN_HEADERS,
    )
    assert created.status_code == 201, created.text
    return created.json()


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['api_key']}"}


def decide(client: TestClient, headers: dict[str, str], task_id: str) -> str:
    decided = client.post("/v1/decide", json={"task_id": task_id, "step": step()}, headers=headers)
    assert decided.status_code == 200, decided.text
    return decided.json()["decision_id"]


def set_up_b(client: TestClient) -> TenantB:
    key = new_key(client, "globex")
    b = bearer(key)
    task = {
        "task_id": "globex-task-1",
        "task_type": TenantB.task_type,
        "tags": {"project": TenantB.tag},
        "budget": budget(),
    }
    assert client.post("/v1/tasks", json=task, headers=b).status_code == 201
    settled = decide(client, b, "globex-task-1")
    assert client.post("/v1/outcomes", json=outcome(settled), headers=b).status_code == 202
    rating = {"decision_id": settled, "rating": "up"}
    assert client.post("/v1/corrections", json=rating, headers=b).status_code == 202
    return TenantB("globex-task-1", decide(client, b, "globex-task-1"), settled, key["key_id"])


def request_bodies(route: Any, b: TenantB) -> list[Any]:
    """Bodies aimed at B's task and decisions for ``route``; [None] if it takes none."""
    if route.path == "/v1/chat/completions":
        return [
            {
                "model": "auto",
                "messages": [{"role": "user", "content": "hello"}],
                "metadata": {"budget_router_task": b.task_id},
            }
        ]
    body_field = getattr(route, "body_field", None)
    if body_field is None:
        return [None]
    name = body_field.field_info.annotation.__name__
    bodies: dict[str, list[Any]] = {
        "TaskCreate": [{"task_id": b.task_id, "task_type": "x", "budget": budget()}],
        "DecideRequest": [{"task_id": b.task_id, "step": step()}],
        "OutcomeReport": [outcome(b.open_decision), outcome(b.settled_decision)],
        "CorrectionRequest": [
            {"decision_id": b.open_decision, "rating": "down"},
            {"task_id": b.task_id, "rating": "down"},
        ],
        "CloseRequest": [{"success": False, "quality": 0.0}],
        "ModelUpdate": [{"provider": "p", "tier": "small", "context_window": 1000}],
        "KeyCreate": [{"tenant": "globex", "trust_domains": ["*"]}],
        "ChampionAction": [{"reason": "tenant A tries to move the champion"}],
    }
    assert name in bodies, f"{route.path}: add a body aimed at tenant B for {name}"
    return bodies[name]


def path_for(route: Any, b: TenantB) -> str:
    values = {
        "task_id": b.task_id,
        "decision_id": b.open_decision,
        "key_id": b.key_id,
        "model_id": "gpt-4o-mini",
        "asset": "dashboard.js",
    }
    names = set(route.param_convertors)
    assert names <= set(values), f"{route.path}: add a value for {names - set(values)}"
    return route.path_format.format(**{n: values[n] for n in names})


def query_for(route: Any, b: TenantB) -> dict[str, str]:
    """B's decision id for every text query parameter (a search), defaults for the rest."""
    dependant = getattr(route, "dependant", None)
    params = dependant.query_params if dependant is not None else []
    return {p.name: b.open_decision for p in params if p.field_info.annotation is str}


def walk(app: Any) -> Iterator[tuple[str, Any]]:
    """Every (method, route) the app serves, HEAD aside, included routers flattened."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI >= 0.165
    for route in flatten(app.routes) if flatten else app.routes:
        assert route.path_format, f"unexpected route {route!r}"
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                yield method, route


def leaked(text: str, sent: str, b: TenantB) -> list[str]:
    """B's ids and data in an answer, other than what the caller itself sent."""
    return [secret for secret in b.secrets if secret in text and secret not in sent]


def problem(key: tuple[str, str], status: int, text: str, sent: str, b: TenantB) -> str | None:
    """What is wrong with tenant A's answer from route ``key``, or None."""
    if status >= 500:
        return "server error"
    secrets = leaked(text, sent, b)
    if secrets:
        return f"leaked {secrets}"
    if key in ID_TAKEN:
        return None if status == 409 else f"expected 409, got {status}"
    if key not in ANSWERS_ANY_TENANT and status not in REFUSALS:
        return f"expected a refusal {sorted(REFUSALS)}, got {status}"
    return None


def test_tenant_a_can_neither_reach_nor_see_tenant_b(app_client: TestClient) -> None:
    client = app_client
    b = set_up_b(client)
    a = bearer(new_key(client, "acme"))
    own_task = {"task_id": "acme-1", "task_type": "a", "budget": budget()}
    assert client.post("/v1/tasks", json=own_task, headers=a).status_code == 201
    own = decide(client, a, "acme-1")
    before = client.get(f"/v1/tasks/{b.task_id}", headers=ADMIN_HEADERS).json()
    requests, routes, problems = 0, set(), []
    for method, route in walk(client.app):
        path = path_for(route, b)
        routes.add((method, route.path))
        query = query_for(route, b)
        for body in request_bodies(route, b):
            response = client.request(method, path, params=query, json=body, headers=a)
            requests += 1
            sent = f"{path} {query} {body}"
            wrong = problem((method, route.path), response.status_code, response.text, sent, b)
            if wrong:
                problems.append(f"{method} {sent}: {wrong}: {response.text[:300]}")
    print(f"tenant isolation: {requests} requests over {len(routes)} routes")
    assert not problems, "\n".join(problems)
    assert len(routes) >= 25

    after = client.get(f"/v1/tasks/{b.task_id}", headers=ADMIN_HEADERS).json()
    assert after == before, "tenant A changed tenant B's task, ledger or decisions"
    b_again = bearer(new_key(client, "globex"))
    booked = client.post("/v1/outcomes", json=outcome(b.open_decision), headers=b_again)
    assert booked.status_code == 202, "B's open decision must still be B's to settle"
    a_view = client.get("/v1/dashboard/decisions", headers=a).json()
    assert [row["decision_id"] for row in a_view] == [own]
    everyone = client.get("/v1/dashboard/decisions", headers=ADMIN_HEADERS).json()
    assert {b.open_decision, b.settled_decision, own} <= {r["decision_id"] for r in everyone}


def test_the_dashboard_summary_counts_only_the_callers_tenant(app_client: TestClient) -> None:
    client = app_client
    b = set_up_b(client)
    a = bearer(new_key(client, "acme"))
    own_task = {
        "task_id": "acme-2",
        "task_type": "a",
        "trust_domain": "acme-eng",
        "budget": budget(),
    }
    assert client.post("/v1/tasks", json=own_task, headers=a).status_code == 201
    decide(client, a, "acme-2")
    mine = client.get("/v1/dashboard/summary", headers=a).json()
    assert (mine["totals"]["decisions"], mine["totals"]["outcomes"]) == (1, 0)
    assert [t["task_id"] for t in mine["tasks"]] == ["acme-2"]
    assert [d["trust_domain"] for d in mine["domains"]] == ["acme-eng"]
    everyone = client.get("/v1/dashboard/summary", headers=ADMIN_HEADERS).json()
    assert (everyone["totals"]["decisions"], everyone["totals"]["outcomes"]) == (3, 1)
    assert {t["task_id"] for t in everyone["tasks"]} == {"acme-2", b.task_id}
