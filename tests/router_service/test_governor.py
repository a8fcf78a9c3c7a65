"""Every governor action and refusal, through the real app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from router_service.app import create_app
from router_service.catalog import SelfHostedRate
from router_service.settings import Settings
from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, budget, step


def open_task(client: TestClient, task_id: str, **overrides: Any) -> dict[str, Any]:
    body = {"task_id": task_id, "task_type": "research", "budget": budget(), **overrides}
    response = client.post("/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def decide(client: TestClient, task_id: str, **fields: Any) -> dict[str, Any]:
    body = {"task_id": task_id, "step": step(), "confirmed": True, **fields}
    response = client.post("/v1/decide", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def report(client: TestClient, decision: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {
        "decision_id": decision["decision_id"],
        "success": True,
        "quality": 0.9,
        "input_tokens": decision["step"]["input_tokens"],
        "output_tokens": decision["step"]["expected_output_tokens"],
        **fields,
    }
    response = client.post("/v1/outcomes", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def tiers(client: TestClient) -> dict[str, int]:
    order = ["small", "medium", "large", "frontier"]
    return {m["id"]: order.index(m["tier"]) for m in client.get("/v1/models").json()}


def preferred(decision: dict[str, Any]) -> str:
    return max(decision["alternatives"], key=lambda a: a["probability"])["model"]


def test_proceed_reserves_the_worst_case_and_the_outcome_settles_it(client: TestClient) -> None:
    open_task(client, "t")
    decision = decide(client, "t")
    assert decision["action"] == "proceed" and decision["rules"] == []
    assert decision["max_output_tokens"] >= decision["step"]["expected_output_tokens"]
    assert decision["ledger"]["reserved_dollars"] == pytest.approx(decision["reserved_dollars"])
    assert decision["ledger_before"]["reserved_dollars"] == 0
    accepted = report(client, decision, cached_input_tokens=1000)
    ledger = client.get("/v1/tasks/t").json()["ledger"]
    assert ledger["reserved_dollars"] == 0
    assert ledger["spent_dollars"] == pytest.approx(accepted["cost_dollars"])
    assert accepted["cost_dollars"] <= decision["reserved_dollars"]
    assert ledger["steps"] == 1 and ledger["output_tokens_used"] == 300


def test_cost_is_priced_from_the_catalog_with_cached_and_reasoning_tokens(
    client: TestClient,
) -> None:
    open_task(client, "t")
    decision = decide(client, "t", candidates=["gpt-5"])
    accepted = report(
        client,
        decision,
        input_tokens=2000,
        cached_input_tokens=1000,
        output_tokens=100,
        reasoning_tokens=200,
    )
    expected = (1000 * 1.25 + 1000 * 0.125 + 300 * 10.0) / 1e6
    assert accepted["cost_dollars"] == pytest.approx(expected)


def test_downgrade_when_the_preferred_model_does_not_fit(client: TestClient) -> None:
    tight = budget(
        total_dollars=0.01, reserve_for_final_synthesis=0.001, reserve_for_human_handoff=0.001
    )
    open_task(client, "t", budget=tight)
    big = step(kind="control", type="planning", input_tokens=20_000, expected_output_tokens=1000)
    decision = decide(client, "t", step=big)
    assert decision["action"] == "downgrade"
    assert decision["rules"][0]["rule"] == "budget_fit"
    assert decision["reserved_dollars"] <= 0.008
    excluded = [a for a in decision["alternatives"] if a["excluded"]]
    assert any("left" in a["excluded_reason"] for a in excluded)


def test_downgrade_when_burn_is_ahead_of_plan(client: TestClient) -> None:
    open_task(client, "t", planned_steps=10)
    report(client, decide(client, "t"), cost_dollars=0.5)
    control = step(kind="control", type="planning")
    decision = decide(client, "t", step=control)
    assert decision["action"] == "downgrade"
    assert decision["rules"][0]["rule"] == "burn_ahead_of_plan"
    rank = tiers(client)
    assert rank[decision["model"]] < 2, "a control step normally goes to a large model"


def test_upgrade_under_recovery_pressure(client: TestClient) -> None:
    open_task(client, "t")
    calm = decide(client, "t")
    pressed = decide(client, "t", signals={"malformed_tool_args": 2, "prior_confidence": 0.2})
    assert pressed["action"] == "upgrade"
    assert "malformed_tool_args=2" in pressed["rules"][0]["detail"]
    rank = tiers(client)
    assert rank[pressed["model"]] > rank[preferred(calm)]


def test_compress_context_when_input_would_break_the_token_cap(client: TestClient) -> None:
    open_task(client, "t", budget=budget(max_input_tokens=5_000))
    decision = decide(client, "t", step=step(input_tokens=8_000))
    assert decision["action"] == "compress_context"
    assert decision["max_input_tokens"] == 5_000
    assert decision["model"] is not None


def test_skip_optional_steps_once_budget_is_tight(client: TestClient) -> None:
    open_task(client, "t")
    report(client, decide(client, "t"), cost_dollars=0.7)
    decision = decide(client, "t", step=step(optional=True))
    assert decision["action"] == "skip_optional" and decision["model"] is None
    assert decision["reserved_dollars"] == 0
    assert decide(client, "t")["action"] != "skip_optional"


def test_require_confirmation_before_an_expensive_branch(client: TestClient) -> None:
    open_task(
        client,
        "t",
        budget=budget(
            total_dollars=0.05, reserve_for_final_synthesis=0.01, reserve_for_human_handoff=0.005
        ),
    )
    big = step(kind="control", type="planning", input_tokens=10_000, expected_output_tokens=1500)
    asked = decide(client, "t", step=big, confirmed=False)
    assert asked["action"] == "require_confirmation"
    assert asked["model"] is not None and asked["reserved_dollars"] == 0
    assert asked["ledger"]["reserved_dollars"] == 0
    conflict = client.post(
        "/v1/outcomes",
        json={
            "decision_id": asked["decision_id"],
            "success": True,
            "quality": 1,
            "input_tokens": 1,
            "output_tokens": 1,
        },
    )
    assert conflict.status_code == 409
    confirmed = decide(client, "t", step=big, confirmed=True)
    assert confirmed["action"] != "require_confirmation" and confirmed["reserved_dollars"] > 0


def test_abort_after_the_retry_cap_while_final_synthesis_stays_possible(
    client: TestClient,
) -> None:
    open_task(client, "t", budget=budget(hard_stop_after_retries=1))
    assert decide(client, "t", signals={"retries": 1})["model"] is not None
    aborted = decide(client, "t", signals={"retries": 2})
    assert aborted["action"] == "abort" and aborted["rules"][0]["rule"] == "retry_cap"
    final = decide(
        client,
        "t",
        step=step(kind="final_synthesis", type="final_synthesis"),
        signals={"retries": 2},
    )
    assert final["model"] is not None


def test_retry_cap_counts_the_agents_retries_when_the_router_saw_fewer(
    client: TestClient,
) -> None:
    open_task(client, "t", budget=budget(hard_stop_after_retries=2))
    assert decide(client, "t", signals={"retries": 2})["model"] is not None
    aborted = decide(client, "t", signals={"retries": 3})
    assert aborted["action"] == "abort" and aborted["rules"][0]["rule"] == "retry_cap"
    assert "agent reports 3, router booked 1" in aborted["rules"][0]["detail"]
    assert aborted["ledger"]["retries_used"] == 1


def test_abort_when_the_input_token_cap_is_spent_says_so(client: TestClient) -> None:
    open_task(client, "t", budget=budget(max_input_tokens=2_000))
    report(client, decide(client, "t", step=step(input_tokens=2_000)), input_tokens=2_000)
    aborted = decide(client, "t", step=step(input_tokens=100))
    assert aborted["action"] == "abort" and aborted["model"] is None
    assert aborted["rules"][-1]["rule"] == "input_token_cap"
    assert "no input tokens left under the task's cap of 2000" in aborted["rules"][-1]["detail"]


def test_abort_when_nothing_is_affordable_and_final_synthesis_uses_its_reserve(
    client: TestClient,
) -> None:
    small = budget(
        total_dollars=0.02, reserve_for_final_synthesis=0.008, reserve_for_human_handoff=0.002
    )
    open_task(client, "t", budget=small)
    report(client, decide(client, "t"), cost_dollars=0.0099)
    aborted = decide(client, "t")
    assert aborted["action"] == "abort" and aborted["model"] is None
    assert aborted["rules"][0]["rule"] == "nothing_affordable"
    final = decide(client, "t", step=step(kind="final_synthesis", type="final_synthesis"))
    assert final["model"] is not None
    assert 0 < final["reserved_dollars"] <= 0.008 + 1e-4
    handoff = decide(
        client,
        "t",
        step=step(kind="handoff", type="handoff", input_tokens=500, expected_output_tokens=100),
    )
    assert handoff["model"] is not None
    ledger = client.get("/v1/tasks/t").json()["ledger"]
    assert ledger["spent_dollars"] + ledger["reserved_dollars"] <= 0.02 + 1e-12


def test_trust_domain_minimum_tier_allowed_models_and_no_exploration(client: TestClient) -> None:
    open_task(client, "t", trust_domain="customer-finance")
    rank = tiers(client)
    for _ in range(20):
        decision = decide(client, "t", step=step(kind="control", type="planning"))
        assert rank[decision["model"]] >= 2
        assert decision["propensity"] == pytest.approx(1.0)
    assert decision["trust_domain"] == {
        "name": "customer-finance",
        "fallback": False,
        "policy_version": "2026-11-28.1",
    }
    reasons = {a["model"]: a["excluded_reason"] for a in decision["alternatives"]}
    assert "not allowed in trust domain" in reasons["gpt-5-nano"]
    assert "below the 'customer-finance' minimum" in reasons["gpt-4.1-mini"]


def test_unknown_domain_falls_back_to_default_and_says_so(client: TestClient) -> None:
    open_task(client, "t", trust_domain="marketing")
    decision = decide(client, "t")
    assert decision["trust_domain"]["name"] == "default"
    assert decision["trust_domain"]["fallback"] is True


def test_bad_policy_reload_keeps_the_old_policy(tmp_path: Path) -> None:
    path = tmp_path / "domains.toml"
    path.write_text('version = "v1"\n[domains.default]\nmax_exploration = 0.1\n')
    settings = Settings(
        data_dir=tmp_path / "var",
        trust_policy_path=path,
        prior_examples_per_kind=5,
        admin_key=ADMIN_KEY,
    )
    with TestClient(create_app(settings), headers=ADMIN_HEADERS) as client:
        path.write_text('version = "v2"\n[domains.default]\nmax_exploration = 7\n')
        response = client.post("/v1/admin/trust-policy/reload")
        assert response.status_code == 422
        assert "max_exploration" in response.json()["error"]["message"]
        assert "kept policy version v1" in response.json()["error"]["message"]
        path.write_text('version = "v3"\n[domains.default]\nmax_exploration = 0.0\n')
        assert client.post("/v1/admin/trust-policy/reload").json() == {"version": "v3"}
        open_task(client, "t")
        assert decide(client, "t")["trust_domain"]["policy_version"] == "v3"


def test_outcome_errors_change_nothing(client: TestClient) -> None:
    open_task(client, "t")
    decision = decide(client, "t")
    base = {
        "decision_id": decision["decision_id"],
        "success": True,
        "quality": 0.5,
        "input_tokens": 10,
        "output_tokens": 10,
    }
    unknown = client.post("/v1/outcomes", json={**base, "decision_id": "nope"})
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "decision_id"
    for field, value in [
        ("input_tokens", -1),
        ("quality", 1.5),
        ("cost_dollars", -0.1),
        ("cached_input_tokens", 50),
    ]:
        bad = client.post("/v1/outcomes", json={**base, field: value})
        assert bad.status_code == 422, field
    assert client.get("/v1/tasks/t").json()["ledger"]["spent_dollars"] == 0
    assert client.post("/v1/outcomes", json=base).status_code == 202
    assert client.post("/v1/outcomes", json=base).status_code == 202  # resent: answered again
    again = client.post("/v1/outcomes", json={**base, "output_tokens": 11})
    assert again.status_code == 409
    assert client.get("/v1/tasks/t").json()["ledger"]["output_tokens_used"] == 10


def test_outcome_beyond_the_grant_is_booked_and_flagged(client: TestClient) -> None:
    open_task(client, "t")
    decision = decide(client, "t")
    accepted = report(client, decision, output_tokens=decision["max_output_tokens"] + 1)
    assert accepted["exceeded_grant"] is True
    assert accepted["ledger"]["output_tokens_used"] == decision["max_output_tokens"] + 1


def test_self_hosted_model_is_reserved_and_booked_at_its_gpu_rate(client: TestClient) -> None:
    open_task(client, "t")
    llama = client.get("/v1/models/llama-3.1-8b-instruct").json()
    assert llama["input_price_per_mtok"] is None
    rate = SelfHostedRate.model_validate(llama["self_hosted_rate"])
    first = decide(client, "t", candidates=["llama-3.1-8b-instruct"])
    assert first["model"] == "llama-3.1-8b-instruct"
    assert first["reserved_dollars"] == pytest.approx(rate.cost(2000, first["max_output_tokens"]))
    accepted = report(client, first, input_tokens=1500, output_tokens=200, reasoning_tokens=40)
    assert accepted["cost_source"] == "self_hosted_rate"
    assert accepted["cost_dollars"] == pytest.approx(rate.cost(1500, 240))
    assert accepted["ledger"]["spent_dollars"] == pytest.approx(rate.cost(1500, 240))


def test_model_without_any_price_is_booked_at_the_observed_estimate_and_says_so(
    client: TestClient,
) -> None:
    spec = {"provider": "self", "tier": "small", "context_window": 100_000}
    assert client.put("/v1/models/local-x", json=spec).status_code == 201
    open_task(client, "t")
    local = ["local-x"]
    first = decide(client, "t", candidates=local)
    assert first["model"] == "local-x" and first["reserved_dollars"] == pytest.approx(0.01)
    unobserved = report(client, first)
    assert unobserved["cost_source"] == "reservation"
    assert unobserved["cost_dollars"] == pytest.approx(first["reserved_dollars"])
    reported = report(client, decide(client, "t", candidates=local), cost_dollars=0.0004)
    assert reported["cost_source"] == "reported" and reported["cost_dollars"] == 0.0004
    second = decide(client, "t", candidates=local)
    bound = 0.0004 / 2000 * 2000 + 0.0004 / 300 * second["max_output_tokens"]
    assert second["reserved_dollars"] == pytest.approx(bound * 1.25)
    estimated = report(client, second, input_tokens=1000, output_tokens=100)
    assert estimated["cost_source"] == "observed_estimate"
    bound = 0.0004 / 2000 * 1000 + 0.0004 / 300 * 100
    assert estimated["cost_dollars"] == pytest.approx(bound * 1.25)
    spent = client.get("/v1/tasks/t").json()["ledger"]["spent_dollars"]
    booked = unobserved["cost_dollars"] + 0.0004 + estimated["cost_dollars"]
    assert spent == pytest.approx(booked)


def test_closed_task_refuses_decisions_and_returns_final_ledger(client: TestClient) -> None:
    open_task(client, "t")
    report(client, decide(client, "t"), cost_dollars=0.01)
    closed = client.post("/v1/tasks/t/close", json={"success": True, "quality": 0.8})
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed"
    assert closed.json()["ledger"]["spent_dollars"] == pytest.approx(0.01)
    refused = client.post("/v1/decide", json={"task_id": "t", "step": step()})
    assert refused.status_code == 409
    assert client.post("/v1/tasks/t/close", json={"success": True, "quality": 1}).status_code == 409
