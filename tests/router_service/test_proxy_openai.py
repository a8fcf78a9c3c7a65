"""The official ``openai`` client pointed at a real router server, proxying to a fake provider."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from router_service.app import create_app
from router_service.catalog import ModelSpec
from tests.conftest import ADMIN_HEADERS, ADMIN_KEY, budget, serve_in_thread
from tests.router_service.fake_provider import COMPLETION_TOKENS, REPLY, FakeProvider, billed_cost
from tests.router_service.test_proxy import MESSAGES, fake, provider_server, proxy_settings

__all__ = ["fake", "provider_server"]  # fixtures shared with test_proxy


@pytest.fixture
def router_url(tmp_path: Path, fake: FakeProvider, provider_server: tuple) -> Iterator[str]:
    app = create_app(proxy_settings(tmp_path, provider_server[1]))
    with serve_in_thread(app) as url:
        yield url


def open_task(url: str, task_id: str) -> None:
    body = {"task_id": task_id, "task_type": "research", "budget": budget()}
    response = httpx.post(f"{url}/v1/tasks", json=body, headers=ADMIN_HEADERS)
    assert response.status_code == 201, response.text


def agent(url: str, task_id: str) -> openai.OpenAI:
    """An agent's usual client: only the base URL, key and a task header differ."""
    return openai.OpenAI(
        base_url=f"{url}/v1",
        api_key=ADMIN_KEY,
        default_headers={"X-Budget-Router-Task": task_id},
        max_retries=0,
    )


def test_the_openai_client_gets_a_completion_and_the_decision_headers(router_url: str) -> None:
    open_task(router_url, "t-sdk")
    with agent(router_url, "t-sdk") as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES, max_tokens=40
        )
    completion = raw.parse()
    assert completion.choices[0].message.content == "".join(REPLY)
    model = raw.headers["x-budget-router-model"]
    assert completion.model == model
    assert completion.usage is not None and completion.usage.completion_tokens <= 40
    task = httpx.get(f"{router_url}/v1/tasks/t-sdk", headers=ADMIN_HEADERS).json()
    assert task["decisions"][0]["decision_id"] == raw.headers["x-budget-router-decision-id"]
    correction = {"decision_id": raw.headers["x-budget-router-decision-id"], "rating": "up"}
    response = httpx.post(f"{router_url}/v1/corrections", json=correction, headers=ADMIN_HEADERS)
    assert response.status_code == 202, response.text
    assert task["ledger"]["output_tokens_used"] == completion.usage.completion_tokens


def test_the_openai_client_streams_through_the_router(router_url: str) -> None:
    open_task(router_url, "t-sdk-stream")
    with agent(router_url, "t-sdk-stream") as client:
        stream = client.chat.completions.create(
            model="auto", messages=MESSAGES, max_tokens=60, stream=True
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(REPLY)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == min(60, COMPLETION_TOKENS)
    task = httpx.get(f"{router_url}/v1/tasks/t-sdk-stream", headers=ADMIN_HEADERS).json()
    model = task["decisions"][0]["model"]
    spec = httpx.get(f"{router_url}/v1/models", headers=ADMIN_HEADERS).json()
    assert model in {m["id"] for m in spec}
    [priced] = [ModelSpec.model_validate(m) for m in spec if m["id"] == model]
    cost = billed_cost(priced, usage.completion_tokens)
    assert task["ledger"]["spent_dollars"] == pytest.approx(cost, abs=1e-12)


def test_the_openai_client_sees_a_missing_task_as_a_422_naming_the_field(router_url: str) -> None:
    with (
        openai.OpenAI(base_url=f"{router_url}/v1", api_key=ADMIN_KEY, max_retries=0) as client,
        pytest.raises(openai.UnprocessableEntityError) as raised,
    ):
        client.chat.completions.create(model="auto", messages=MESSAGES)
    assert "budget_router_task" in raised.value.message


def stream_request(url: str, task_id: str) -> dict:
    return {
        "method": "POST",
        "url": f"{url}/v1/chat/completions",
        "json": {"model": "auto", "messages": MESSAGES, "stream": True},
        "headers": {**ADMIN_HEADERS, "X-Budget-Router-Task": task_id},
        "timeout": 30,
    }


def test_each_event_is_relayed_as_it_arrives(router_url: str, fake: FakeProvider) -> None:
    fake.hold = threading.Event()
    open_task(router_url, "t-live")
    with httpx.stream(**stream_request(router_url, "t-live")) as response:
        lines = response.iter_lines()
        next(line for line in lines if '"content": "Hel"' in line)
        assert not fake.hold.is_set()  # came through while the provider holds back the rest
        fake.hold.set()
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    assert any('"usage": {' in line for line in rest)


def test_an_agent_that_hangs_up_mid_stream_still_settles_the_step(
    router_url: str, fake: FakeProvider
) -> None:
    fake.hold = threading.Event()
    open_task(router_url, "t-hangup")
    with httpx.stream(**stream_request(router_url, "t-hangup")) as response:
        next(line for line in response.iter_lines() if '"content": "Hel"' in line)
    deadline = time.monotonic() + 20  # the fake holds the rest back until set, or 10 s
    while (task := read_task(router_url, "t-hangup"))["ledger"]["reserved_dollars"] > 0:
        assert time.monotonic() < deadline, "the reservation was never settled"
        time.sleep(0.02)
    fake.hold.set()  # settled while the provider was still holding: the hang-up was seen
    [decision] = task["decisions"]
    assert task["ledger"]["output_tokens_used"] == decision["max_output_tokens"]  # the estimate
    assert task["ledger"]["spent_dollars"] > 0


def read_task(url: str, task_id: str) -> dict:
    return httpx.get(f"{url}/v1/tasks/{task_id}", headers=ADMIN_HEADERS).json()
