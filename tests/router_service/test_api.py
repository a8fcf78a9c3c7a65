"""The decision API through a real app instance."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from router_service.schemas import Decision
from tests.conftest import budget, step


def open_task(client: TestClient, **overrides: Any) -> dict[str, Any]:
    body = {"task_type": "research", "trust_domain": "eng", "budget": budget(), **overrides}
    response = client.post("/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["policy_version"].startswith("prior@")


def test_open_task_generates_id_and_returns_budget(client: TestClient) -> None:
    task = open_task(client, planned_steps=6, tags={"team": "search"})
    assert task["task_id"].startswith("task_")
    assert task["budget"]["total_dollars"] == 1.0
    assert task["tags"] == {"team": "search"}
    assert task["status"] == "open"


def test_decision_is_explained_and_recorded_on_the_task(client: TestClient) -> None:
    task = open_task(client, task_id="t-1")
    response = client.post("/v1/decide", json={"task_id": "t-1", "step": step()})
    assert response.status_code == 200, response.text
    decision = response.json()
    considered = [a for a in decision["alternatives"] if not a["excluded"]]
    assert sum(a["probability"] for a in considered) == pytest.approx(1.0)
    chosen = next(a for a in decision["alternatives"] if a["model"] == decision["model"])
    assert decision["propensity"] == pytest.approx(chosen["probability"])
    assert decision["reasons"] and decision["policy_version"].startswith("prior@")
    assert decision["exploration"].startswith("epsilon-greedy")
    assert decision["budget"] == task["budget"]
    stored = client.get("/v1/tasks/t-1").json()
    assert [d["decision_id"] for d in stored["decisions"]] == [decision["decision_id"]]


def test_decision_body_is_exactly_the_documented_schema(client: TestClient) -> None:
    open_task(client, task_id="t-schema")
    body = client.post("/v1/decide", json={"task_id": "t-schema", "step": step()}).json()
    model = Decision.model_validate(body)  # built without pydantic on the hot path
    assert list(body) == list(Decision.model_fields)
    assert model.model_dump(mode="json", exclude={"created_at"}) == {
        k: v for k, v in body.items() if k != "created_at"
    }


def test_prior_prefers_strong_models_for_control_and_cheap_for_presentation(
    client: TestClient,
) -> None:
    open_task(client, task_id="t-prior")
    tiers = {m["id"]: m["tier"] for m in client.get("/v1/models").json()}

    def top_tier(kind: str, kind_type: str) -> str:
        decision = client.post(
            "/v1/decide",
            json={"task_id": "t-prior", "step": step(kind=kind, type=kind_type)},
        ).json()
        top = max(decision["alternatives"], key=lambda a: a["probability"])
        return tiers[top["model"]]

    assert top_tier("control", "planning") in {"large", "frontier"}
    assert top_tier("presentation", "summarize") == "small"


def test_candidates_restrict_and_exclusions_are_explained(client: TestClient) -> None:
    open_task(client, task_id="t-c")
    body = {"task_id": "t-c", "step": step(), "candidates": ["gpt-5-nano", "gpt-4.1-mini"]}
    decision = client.post("/v1/decide", json=body).json()
    assert decision["model"] in {"gpt-5-nano", "gpt-4.1-mini"}
    excluded = [a for a in decision["alternatives"] if a["excluded"]]
    assert excluded and all(a["probability"] == 0 for a in excluded)
    assert all("candidates" in a["excluded_reason"] for a in excluded)


def test_models_too_small_for_the_step_are_excluded(client: TestClient) -> None:
    open_task(client, task_id="t-big", budget=budget(max_input_tokens=2_000_000))
    big = step(input_tokens=500_000, expected_output_tokens=1000)
    decision = client.post("/v1/decide", json={"task_id": "t-big", "step": big}).json()
    assert decision["model"] in {"gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"} | {
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
    }
    reasons = [a["excluded_reason"] for a in decision["alternatives"] if a["excluded"]]
    assert any("context window" in r for r in reasons)


def test_put_model_adds_then_updates_and_routes_to_it(client: TestClient) -> None:
    spec = {"provider": "self", "tier": "small", "context_window": 32_000, "tags": ["general"]}
    assert client.put("/v1/models/local-7b", json=spec).status_code == 201
    spec["tier"] = "medium"
    updated = client.put("/v1/models/local-7b", json=spec)
    assert updated.status_code == 200 and updated.json()["tier"] == "medium"
    assert "local-7b" in {m["id"] for m in client.get("/v1/models").json()}
    open_task(client, task_id="t-local")
    body = {"task_id": "t-local", "step": step(), "candidates": ["local-7b"]}
    decision = client.post("/v1/decide", json=body).json()
    assert decision["model"] == "local-7b" and decision["propensity"] == pytest.approx(1.0)
    local = next(a for a in decision["alternatives"] if a["model"] == "local-7b")
    assert local["estimated_cost_dollars"] is None


def test_malformed_json_is_422_naming_the_body_and_where_it_broke(client: TestClient) -> None:
    response = client.post(
        "/v1/tasks",
        content=b'{"task_type": "x", "budget": }',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    [problem] = response.json()["error"]["fields"]
    assert problem["field"] == "body"
    assert problem["expected"].startswith("a JSON document (")
    assert problem["expected"] == "a JSON document (Expecting value at character 29)"


BAD_TASKS = [
    ({"budget": budget(total_dollars=-1)}, "budget.total_dollars"),
    ({"budget": budget(max_input_tokens=0)}, "budget.max_input_tokens"),
    ({"budget": budget(reserve_for_final_synthesis=0.9, reserve_for_human_handoff=0.2)}, "budget"),
    ({"budget": None}, "budget"),
    ({"task_type": ""}, "task_type"),
    ({"task_id": "has space"}, "task_id"),
    ({"planned_steps": 0}, "planned_steps"),
    ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(("override", "field"), BAD_TASKS)
def test_bad_task_bodies_name_the_field(
    client: TestClient, override: dict[str, Any], field: str
) -> None:
    body = {"task_type": "research", "budget": budget(), **override}
    response = client.post("/v1/tasks", json=body)
    assert response.status_code == 422
    fields = [f["field"] for f in response.json()["error"]["fields"]]
    assert any(f.startswith(field) for f in fields), fields


BAD_DECISIONS = [
    ({"step": step(kind="bogus")}, 422, "step.kind"),
    ({"step": step(input_tokens=-5)}, 422, "step.input_tokens"),
    ({"step": step(input_tokens=0)}, 422, "step.input_tokens"),
    ({"step": step(expected_output_tokens=0)}, 422, "step.expected_output_tokens"),
    ({"step": {"kind": "control"}}, 422, "step.type"),
    ({"signals": {"retries": -1}}, 422, "signals.retries"),
    ({"signals": {"prior_confidence": 1.5}}, 422, "signals.prior_confidence"),
    ({"context": {"nested": {"a": 1}}}, 422, "context.nested"),
    ({"candidates": []}, 422, "candidates"),
    ({"candidates": ["no-such-model"]}, 422, "candidates"),
    ({"task_id": "unknown-task"}, 404, "task_id"),
]


@pytest.mark.parametrize(("override", "status", "field"), BAD_DECISIONS)
def test_bad_decision_requests_are_4xx_naming_the_field(
    client: TestClient, override: dict[str, Any], status: int, field: str
) -> None:
    open_task(client, task_id="t-bad")
    body = {"task_id": "t-bad", "step": step(), **override}
    response = client.post("/v1/decide", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    named = [f["field"] for f in error.get("fields", [])] + [error.get("field")]
    assert any(n and n.startswith(field) for n in named), error


def test_step_that_no_model_can_hold_aborts_with_reasons(client: TestClient) -> None:
    open_task(client, task_id="t-huge", budget=budget(max_input_tokens=50_000_000))
    huge = step(input_tokens=5_000_000)
    decision = client.post("/v1/decide", json={"task_id": "t-huge", "step": huge}).json()
    assert decision["action"] == "abort" and decision["model"] is None
    assert "context window" in decision["rules"][0]["detail"]
    assert "final_synthesis may still use" in decision["rules"][0]["detail"]


def test_unknown_model_and_duplicate_task_are_clear(client: TestClient) -> None:
    response = client.get("/v1/models/nope")
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "model_id"
    open_task(client, task_id="dup")
    again = client.post("/v1/tasks", json={"task_id": "dup", "task_type": "x", "budget": budget()})
    assert again.status_code == 409
    bad_model = client.put("/v1/models/x", json={"provider": "p", "tier": "huge"})
    assert bad_model.status_code == 422


def test_openapi_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/tasks", "/v1/decide", "/v1/models"} <= set(paths)


def test_closed_tasks_are_forgotten_after_the_retention_period(client: TestClient) -> None:
    open_task(client, task_id="old")
    decision = client.post("/v1/decide", json={"task_id": "old", "step": step()}).json()
    client.post("/v1/tasks/old/close", json={"success": True, "quality": 1})
    state = client.app.state.router  # type: ignore[attr-defined]
    retention = state.settings.closed_task_retention_seconds
    state.sweep(state.ledger.now() + retention / 2)
    assert client.get("/v1/tasks/old").status_code == 200
    state.sweep(state.ledger.now() + retention + 1)
    assert client.get("/v1/tasks/old").status_code == 200, "kept while a reservation is open"
    report = {
        "decision_id": decision["decision_id"],
        "success": True,
        "quality": 1,
        "input_tokens": 1,
        "output_tokens": 1,
    }
    assert client.post("/v1/outcomes", json=report).status_code == 202
    state.sweep(state.ledger.now() + retention + 1)
    assert client.get("/v1/tasks/old").status_code == 404
    assert client.post("/v1/outcomes", json=report).status_code == 404
