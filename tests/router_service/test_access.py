"""Access control, metrics and the dashboard through the real app."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_HEADERS, budget, step


def tenant_headers(client: TestClient, tenant: str, domains: list[str]) -> dict[str, str]:
    response = client.post("/v1/admin/keys", json={"tenant": tenant, "trust_domains": domains})
    assert response.status_code in (200, 201), response.text
    return {"Authorization": f"Bearer {response.json()['api_key']}"}


def test_requests_without_a_valid_key_get_401(client: TestClient) -> None:
    bare = {"Authorization": ""}
    for method, path in [("get", "/v1/models"), ("post", "/v1/decide"), ("get", "/v1/tasks/x")]:
        response = client.request(method, path, headers=bare)
        assert response.status_code == 401, path
    wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz", headers=bare).status_code == 200


def test_another_tenants_task_is_404_and_admin_ops_need_admin(client: TestClient) -> None:
    acme = tenant_headers(client, "acme", ["eng"])
    globex = tenant_headers(client, "globex", ["*"])
    body = {"task_id": "acme-1", "task_type": "x", "trust_domain": "eng", "budget": budget()}
    assert client.post("/v1/tasks", json=body, headers=acme).status_code == 201
    decision = client.post(
        "/v1/decide", json={"task_id": "acme-1", "step": step()}, headers=acme
    ).json()
    assert client.get("/v1/tasks/acme-1", headers=globex).status_code == 404
    stolen = client.post("/v1/decide", json={"task_id": "acme-1", "step": step()}, headers=globex)
    assert stolen.status_code == 404
    report = {
        "decision_id": decision["decision_id"],
        "success": True,
        "quality": 1,
        "input_tokens": 1,
        "output_tokens": 1,
    }
    assert client.post("/v1/outcomes", json=report, headers=globex).status_code == 404
    assert client.get("/v1/tasks/acme-1", headers=ADMIN_HEADERS).status_code == 200
    model = {"provider": "p", "tier": "small", "context_window": 1000}
    assert client.put("/v1/models/m", json=model, headers=acme).status_code == 403
    assert client.post("/v1/admin/trust-policy/reload", headers=acme).status_code == 403
    other_domain = {**body, "task_id": "acme-2", "trust_domain": "finance"}
    refused = client.post("/v1/tasks", json=other_domain, headers=acme)
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "trust_domain"


def test_metrics_count_decisions_and_the_dashboard_needs_a_key(client: TestClient) -> None:
    client.post("/v1/tasks", json={"task_id": "m", "task_type": "x", "budget": budget()})
    decision = client.post("/v1/decide", json={"task_id": "m", "step": step()}).json()
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    decisions = families["budget_router_decisions"].samples
    assert any(s.labels.get("model") == decision["model"] and s.value == 1 for s in decisions)
    assert "budget_router_decision_latency_seconds" in families
    assert client.get("/dashboard", headers={"Authorization": ""}).status_code == 200
    bare = client.get("/v1/dashboard/summary", headers={"Authorization": ""})
    assert bare.status_code == 401
    found = client.get("/v1/dashboard/decisions", params={"q": decision["decision_id"]}).json()
    assert [row["decision_id"] for row in found] == [decision["decision_id"]]
