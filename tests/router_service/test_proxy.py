"""The OpenAI-compatible proxy end to end: router app -> real loopback provider server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from router_service.app import create_app
from router_service.embedded_broker import free_port
from router_service.settings import ProviderEndpoint, Settings
from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, budget, serve_in_thread
from tests.router_service.fake_provider import (
    CACHED_TOKENS,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    REASONING_TOKENS,
    REPLY,
    FakeProvider,
    billed_cost,
)

PROVIDERS = ("openai", "gemini", "deepseek", "anthropic", "self-hosted")
MESSAGES = [{"role": "user", "content": "Extract the dates from this contract. " * 20}]
PROVIDER_KEY = "sk-provider-fake-key"


@pytest.fixture(scope="module")
def provider_server() -> Iterator[tuple[FakeProvider, str]]:
    fake = FakeProvider()
    with serve_in_thread(fake.app()) as url:
        yield fake, url


@pytest.fixture
def fake(provider_server: tuple[FakeProvider, str]) -> FakeProvider:
    provider_server[0].reset()
    return provider_server[0]


def proxy_settings(
    tmp_path: Path, url: str, providers: tuple[str, ...] = PROVIDERS, **down: str
) -> Settings:
    """Every provider in ``providers`` served by the fake; those in ``down`` at their URL."""
    endpoint = {"base_url": f"{url}/v1", "api_key": PROVIDER_KEY}
    return Settings(
        data_dir=tmp_path / "var",
        prior_examples_per_kind=10,
        seed=7,
        admin_key=ADMIN_KEY,
        providers={
            **{name: endpoint for name in providers},
            **{name: {"base_url": dead} for name, dead in down.items()},
        },
        proxy={"backoff_seconds": 0.01, "max_retries": 2},
    )


@pytest.fixture
def proxy(
    tmp_path: Path, fake: FakeProvider, provider_server: tuple[FakeProvider, str]
) -> Iterator[TestClient]:
    app = create_app(proxy_settings(tmp_path, provider_server[1]))
    with TestClient(app, headers=ADMIN_HEADERS) as client:
        yield client


def open_task(client: TestClient, task_id: str, **budget_overrides: float) -> None:
    body = {"task_id": task_id, "task_type": "research", "budget": budget(**budget_overrides)}
    response = client.post("/v1/tasks", json=body)
    assert response.status_code == 201, response.text


def chat(client: TestClient, task_id: str | None, **fields: Any) -> Any:
    headers = {"X-Budget-Router-Task": task_id} if task_id else {}
    body = {"model": "anything", "messages": MESSAGES, **fields}
    return client.post("/v1/chat/completions", json=body, headers=headers)


def catalog(client: TestClient) -> dict[str, Any]:
    return client.app.state.router.catalog.snapshot()  # type: ignore[attr-defined]


def task_view(client: TestClient, task_id: str) -> dict[str, Any]:
    return client.get(f"/v1/tasks/{task_id}").json()


def test_forwards_to_the_chosen_model_capped_and_books_the_usage_to_the_cent(
    proxy: TestClient, fake: FakeProvider
) -> None:
    open_task(proxy, "t-proxy")
    response = chat(proxy, "t-proxy", max_tokens=100_000, metadata={"user": "kept"})
    assert response.status_code == 200, response.text
    model = response.headers["X-Budget-Router-Model"]
    decision_id = response.headers["X-Budget-Router-Decision-Id"]
    assert response.headers["X-Budget-Router-Action"] in {"proceed", "upgrade", "downgrade"}
    assert response.json()["choices"][0]["message"]["content"] == "".join(REPLY)
    [sent] = fake.requests
    task = task_view(proxy, "t-proxy")
    [decision] = task["decisions"]
    assert decision["decision_id"] == decision_id and decision["model"] == model
    assert sent["body"]["model"] == model
    assert sent["body"]["max_tokens"] == decision["max_output_tokens"] < 100_000
    assert sent["body"]["metadata"] == {"user": "kept"}
    assert sent["authorization"] == f"Bearer {PROVIDER_KEY}"
    completion = min(decision["max_output_tokens"], COMPLETION_TOKENS)
    cost = billed_cost(catalog(proxy)[model], completion)
    ledger = task["ledger"]
    assert ledger["spent_dollars"] == pytest.approx(cost, abs=1e-12)
    assert ledger["reserved_dollars"] == 0
    assert ledger["input_tokens_used"] == PROMPT_TOKENS
    assert ledger["output_tokens_used"] == completion  # reasoning is inside completion
    assert completion > REASONING_TOKENS and CACHED_TOKENS < PROMPT_TOKENS


def test_the_grant_is_sent_when_the_request_names_no_cap(
    proxy: TestClient, fake: FakeProvider
) -> None:
    open_task(proxy, "t-nocap")
    assert chat(proxy, "t-nocap").status_code == 200
    [decision] = task_view(proxy, "t-nocap")["decisions"]
    body = fake.requests[0]["body"]
    assert body["max_completion_tokens"] == decision["max_output_tokens"]
    assert "max_tokens" not in body


def test_metadata_names_the_task_and_step_and_is_not_forwarded(
    proxy: TestClient, fake: FakeProvider
) -> None:
    open_task(proxy, "t-meta")
    metadata = {"budget_router_task": "t-meta", "step_kind": "control", "step_type": "planning"}
    response = chat(proxy, None, metadata=metadata, max_completion_tokens=64)
    assert response.status_code == 200, response.text
    [decision] = task_view(proxy, "t-meta")["decisions"]
    assert decision["step"]["kind"] == "control" and decision["step"]["type"] == "planning"
    assert decision["step"]["expected_output_tokens"] == 64
    assert decision["step"]["input_tokens"] == len(json.dumps(MESSAGES)) // 4
    body = fake.requests[0]["body"]
    assert "metadata" not in body
    assert body["max_completion_tokens"] == min(64, decision["max_output_tokens"])


def test_streaming_relays_the_events_and_books_the_final_usage(
    proxy: TestClient, fake: FakeProvider
) -> None:
    open_task(proxy, "t-stream")
    body = {"model": "x", "messages": MESSAGES, "stream": True, "max_tokens": 50}
    headers = {"X-Budget-Router-Task": "t-stream"}
    with proxy.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        model = response.headers["X-Budget-Router-Model"]
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "".join(REPLY)
    assert fake.requests[0]["body"]["stream_options"] == {"include_usage": True}
    task = task_view(proxy, "t-stream")
    completion = min(50, COMPLETION_TOKENS, task["decisions"][0]["max_output_tokens"])
    assert task["ledger"]["spent_dollars"] == pytest.approx(
        billed_cost(catalog(proxy)[model], completion), abs=1e-12
    )
    assert task["ledger"]["output_tokens_used"] == completion


def test_a_stream_without_usage_books_the_grant_estimate(
    proxy: TestClient, fake: FakeProvider
) -> None:
    fake.send_usage = False
    open_task(proxy, "t-nousage")
    body = {"model": "x", "messages": MESSAGES, "stream": True}
    headers = {"X-Budget-Router-Task": "t-nousage"}
    with proxy.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        model = response.headers["X-Budget-Router-Model"]
        assert response.read().endswith(b"data: [DONE]\n\n")
    task = task_view(proxy, "t-nousage")
    [decision] = task["decisions"]
    estimate = catalog(proxy)[model].token_cost(
        decision["step"]["input_tokens"], decision["max_output_tokens"]
    )
    assert task["ledger"]["spent_dollars"] == pytest.approx(estimate, abs=1e-12)
    assert task["ledger"]["output_tokens_used"] == decision["max_output_tokens"]


def test_a_5xx_is_retried_on_the_same_model(proxy: TestClient, fake: FakeProvider) -> None:
    fake.fail_next = 1
    open_task(proxy, "t-retry")
    response = chat(proxy, "t-retry")
    assert response.status_code == 200, response.text
    assert "X-Budget-Router-Fallback-From" not in response.headers
    assert [r["body"]["model"] for r in fake.requests] == [
        response.headers["X-Budget-Router-Model"]
    ] * 2
    assert len(task_view(proxy, "t-retry")["decisions"]) == 1


def test_a_provider_that_keeps_failing_is_a_failed_step_then_a_fallback(
    proxy: TestClient, fake: FakeProvider
) -> None:
    fake.fail_next = 3  # every attempt of the first decision (max_retries 2)
    open_task(proxy, "t-fallback")
    response = chat(proxy, "t-fallback")
    assert response.status_code == 200, response.text
    first, second = task_view(proxy, "t-fallback")["decisions"]
    assert response.headers["X-Budget-Router-Fallback-From"] == first["decision_id"]
    assert response.headers["X-Budget-Router-Decision-Id"] == second["decision_id"]
    assert second["signals"]["retries"] == 1
    assert catalog(proxy)[second["model"]].provider != catalog(proxy)[first["model"]].provider
    assert len(fake.requests) == 4
    assert [r["body"]["model"] for r in fake.requests] == [first["model"]] * 3 + [second["model"]]
    ledger = task_view(proxy, "t-fallback")["ledger"]
    assert ledger["retries_used"] == 1 and ledger["reserved_dollars"] == 0
    completion = min(COMPLETION_TOKENS, second["max_output_tokens"])
    expected = billed_cost(catalog(proxy)[second["model"]], completion)  # the failure books 0
    assert ledger["spent_dollars"] == pytest.approx(expected, abs=1e-12)


def test_when_every_call_fails_the_provider_error_comes_back_in_openai_shape(
    proxy: TestClient, fake: FakeProvider
) -> None:
    fake.fail_next = 100
    open_task(proxy, "t-down")
    response = chat(proxy, "t-down")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "fake_outage"
    assert len(task_view(proxy, "t-down")["decisions"]) == 2  # one fallback, no more
    assert len(fake.requests) == 6
    assert task_view(proxy, "t-down")["ledger"]["reserved_dollars"] == 0


def test_a_4xx_is_not_retried_on_the_same_model(proxy: TestClient, fake: FakeProvider) -> None:
    fake.fail_next, fake.fail_status = 1, 400
    open_task(proxy, "t-4xx")
    response = chat(proxy, "t-4xx")
    assert response.status_code == 200
    models = [r["body"]["model"] for r in fake.requests]
    assert len(models) == 2 and models[0] != models[1]  # one try, then the fallback model


def test_no_fallback_past_the_governors_retry_cap(proxy: TestClient, fake: FakeProvider) -> None:
    fake.fail_next = 3
    open_task(proxy, "t-cap", hard_stop_after_retries=0)
    response = chat(proxy, "t-cap")
    assert response.status_code == 500
    first, second = task_view(proxy, "t-cap")["decisions"]
    assert first["model"] is not None
    assert second["model"] is None and second["action"] == "abort"
    assert response.headers["X-Budget-Router-Decision-Id"] == second["decision_id"]
    assert len(fake.requests) == 3


def test_a_governor_stop_is_an_openai_error_naming_the_rule(proxy: TestClient) -> None:
    open_task(
        proxy,
        "t-broke",
        total_dollars=0.0001,
        reserve_for_final_synthesis=0.0,
        reserve_for_human_handoff=0.0,
    )
    response = chat(proxy, "t-broke", max_tokens=20_000)
    assert response.status_code in {402, 409}, response.text
    error = response.json()["error"]
    assert error["type"] == "budget_router_governor"
    assert error["code"] == response.headers["X-Budget-Router-Action"]
    assert error["rules"] and all(rule in error["message"] for rule in error["rules"])


@pytest.mark.parametrize(
    ("headers", "body", "field"),
    [
        ({}, {"messages": MESSAGES}, "X-Budget-Router-Task header or metadata.budget_router_task"),
        ({"X-Budget-Router-Task": "t-bad"}, {"messages": []}, "messages"),
        (
            {"X-Budget-Router-Task": "t-bad", "X-Budget-Router-Step-Kind": "thinking"},
            {"messages": MESSAGES},
            "step_kind",
        ),
        ({"X-Budget-Router-Task": "t-bad"}, {"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"X-Budget-Router-Task": "t-bad"}, {"messages": MESSAGES, "stream": "yes"}, "stream"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(
    proxy: TestClient, fake: FakeProvider, headers: dict[str, str], body: dict, field: str
) -> None:
    open_task(proxy, "t-bad")
    response = proxy.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert fake.requests == []


def test_an_unknown_task_is_404(proxy: TestClient) -> None:
    response = chat(proxy, "t-nobody")
    assert response.status_code == 404


def test_only_models_with_a_configured_provider_are_candidates(
    tmp_path: Path, fake: FakeProvider, provider_server: tuple[FakeProvider, str]
) -> None:
    app = create_app(proxy_settings(tmp_path, provider_server[1], providers=("gemini",)))
    with TestClient(app, headers=ADMIN_HEADERS) as client:
        open_task(client, "t-gemini")
        response = chat(client, "t-gemini")
        assert response.status_code == 200, response.text
        assert catalog(client)[response.headers["X-Budget-Router-Model"]].provider == "gemini"
        [decision] = task_view(client, "t-gemini")["decisions"]
        for alternative in decision["alternatives"]:
            if catalog(client)[alternative["model"]].provider != "gemini":
                assert alternative["excluded"]


def test_without_any_provider_endpoint_the_error_says_what_to_configure(
    tmp_path: Path, fake: FakeProvider, provider_server: tuple[FakeProvider, str]
) -> None:
    app = create_app(proxy_settings(tmp_path, provider_server[1], providers=()))
    with TestClient(app, headers=ADMIN_HEADERS) as client:
        open_task(client, "t-none")
        response = chat(client, "t-none")
    assert response.status_code == 503
    assert "BUDGET_ROUTER_PROVIDERS" in response.json()["error"]["message"]
    assert fake.requests == []


def test_the_proxy_needs_a_router_api_key(proxy: TestClient) -> None:
    body = {"messages": MESSAGES}
    response = proxy.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer x"})
    assert response.status_code == 401


def test_an_unreachable_provider_is_retried_then_left_out_of_the_fallback(
    tmp_path: Path, fake: FakeProvider, provider_server: tuple[FakeProvider, str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    app = create_app(proxy_settings(tmp_path, provider_server[1], providers=(), openai=dead))
    with TestClient(app, headers=ADMIN_HEADERS) as client:
        open_task(client, "t-dead")
        response = chat(client, "t-dead")
        task = task_view(client, "t-dead")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "unreachable"
    assert "3 attempts" in response.json()["error"]["message"]
    [decision] = task["decisions"]  # every other candidate is the same provider's: no fallback
    assert catalog(client)[decision["model"]].provider == "openai"
    assert task["ledger"]["reserved_dollars"] == 0 and task["ledger"]["spent_dollars"] == 0


def test_a_provider_may_know_a_model_by_another_name(
    tmp_path: Path, fake: FakeProvider, provider_server: tuple[FakeProvider, str]
) -> None:
    settings = proxy_settings(tmp_path, provider_server[1], providers=())
    names = {"gemini-2.5-flash-lite": "flash-lite-001", "gemini-2.5-flash": "flash-001"}
    names |= {"gemini-2.5-pro": "pro-001"}
    settings.providers["gemini"] = ProviderEndpoint(
        base_url=f"{provider_server[1]}/v1", model_names=names
    )
    with TestClient(create_app(settings), headers=ADMIN_HEADERS) as client:
        open_task(client, "t-names")
        response = chat(client, "t-names")
    assert response.status_code == 200, response.text
    assert fake.requests[0]["body"]["model"] == names[response.headers["X-Budget-Router-Model"]]
    assert fake.requests[0]["authorization"] is None  # no key configured: none sent


def test_an_expensive_step_waits_for_the_agents_confirmation(
    proxy: TestClient, fake: FakeProvider
) -> None:
    open_task(
        proxy,
        "t-confirm",
        total_dollars=0.2,
        reserve_for_final_synthesis=0.0,
        reserve_for_human_handoff=0.0,
    )
    headers = {"X-Budget-Router-Task": "t-confirm", "X-Budget-Router-Step-Kind": "control"}
    body = {"messages": MESSAGES, "max_tokens": 10_000}
    asked = proxy.post("/v1/chat/completions", json=body, headers=headers)
    assert asked.status_code == 409, asked.text
    assert asked.json()["error"]["code"] == "require_confirmation"
    assert "expensive_branch" in asked.json()["error"]["rules"]
    assert fake.requests == []
    headers["X-Budget-Router-Confirmed"] = "true"
    confirmed = proxy.post("/v1/chat/completions", json=body, headers=headers)
    assert confirmed.status_code == 200, confirmed.text
    assert len(fake.requests) == 1
