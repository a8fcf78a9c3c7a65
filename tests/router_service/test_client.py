"""The Python client against the real app (TestClient, ASGITransport) and a MockTransport."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from router_service.app import create_app
from router_service.client import (
    AsyncBudgetRouterClient,
    BudgetRouterClient,
    ClientError,
    RetryPolicy,
    TransientError,
)
from router_service.schemas import Budget, Decision, OutcomeAccepted, Step, Task
from router_service.settings import Settings
from tests.conftest import ADMIN_KEY, budget, step

FAST = RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0)
Handler = Callable[[httpx.Request], httpx.Response]


def task_json(task_id: str = "t-1", status: str = "open") -> dict[str, Any]:
    return {
        "task_id": task_id,
        "trust_domain": "eng",
        "task_type": "research",
        "budget": budget(),
        "planned_steps": None,
        "tags": {},
        "status": status,
        "created_at": "2025-01-01T00:00:00Z",
    }


class Recorder:
    """A MockTransport handler that answers from a script and records each request."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer

    def client(self, **options: Any) -> BudgetRouterClient:
        transport = httpx.MockTransport(self)
        return BudgetRouterClient("http://router", transport=transport, retry=FAST, **options)

    def body(self, index: int = -1) -> dict[str, Any]:
        return json.loads(self.requests[index].content)


def unavailable(status: int = 503, **headers: str) -> httpx.Response:
    error = {"error": {"code": "unavailable", "message": "broker down"}}
    return httpx.Response(status, json=error, headers=headers)


# --- against the real app ---------------------------------------------------------------


def test_full_task_through_the_real_app(client: TestClient) -> None:
    router = BudgetRouterClient(http=client)
    task = router.open_task("research", Budget(**budget()), trust_domain="eng", planned_steps=3)
    assert isinstance(task, Task) and task.task_id.startswith("task_")
    decision = router.decide(task.task_id, Step(**step()), signals={"retries": 1})
    assert isinstance(decision, Decision) and decision.model is not None
    assert decision.signals.retries == 1
    accepted = router.report(decision.decision_id, True, 0.9, 2_000, 250, cost_dollars=0.01)
    assert isinstance(accepted, OutcomeAccepted)
    assert accepted.ledger.spent_dollars == pytest.approx(0.01)
    closed = router.close(task.task_id, success=True, quality=0.9)
    assert closed.status == "closed"


def test_validation_error_names_the_field(client: TestClient) -> None:
    router = BudgetRouterClient(http=client)
    with pytest.raises(ClientError) as caught:
        router.open_task("research", budget(total_dollars=-1))
    error = caught.value
    assert (error.status, error.code, error.retriable) == (422, "invalid_request", False)
    assert error.fields[0]["field"] == "budget.total_dollars"


def test_unknown_task_is_a_not_found_error_with_its_field(client: TestClient) -> None:
    with pytest.raises(ClientError, match="404 not_found") as caught:
        BudgetRouterClient(http=client).decide("t-none", step())
    assert caught.value.field == "task_id"


def test_task_scope_closes_with_the_mean_step_quality(client: TestClient) -> None:
    router = BudgetRouterClient(http=client)
    with router.task(task_type="research", budget=budget(), trust_domain="eng") as task:
        for quality in (0.6, 1.0):
            decision = task.decide(step(), signals={"retries": 0})
            task.report(decision, True, quality, 2_000, 200, cost_dollars=0.001)
    assert task.closed is not None and task.closed.status == "closed"
    assert task.final(None, None) == (True, pytest.approx(0.8))
    assert router.get_task(task.task_id).status == "closed"


def test_async_client_over_asgi_transport(tmp_path: Path) -> None:
    app = create_app(
        Settings(data_dir=tmp_path / "var", prior_examples_per_kind=10, seed=7, admin_key=ADMIN_KEY)
    )

    async def run() -> Task:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with AsyncBudgetRouterClient(
                "http://router", api_key=ADMIN_KEY, transport=transport
            ) as router:
                async with router.task("research", budget(), trust_domain="eng") as task:
                    decision = await task.decide(step())
                    await task.report(decision, True, 0.7, 2_000, 200, cost_dollars=0.002)
                    task.success = False
                with pytest.raises(ClientError, match="already closed"):
                    await router.close(task.task_id, success=True, quality=1.0)
                return await router.get_task(task.task_id)

    fetched = asyncio.run(run())
    assert fetched.status == "closed"


# --- retries and errors with a MockTransport --------------------------------------------


def test_retries_503_then_succeeds() -> None:
    script = Recorder(unavailable(), unavailable(502), httpx.Response(200, json=task_json()))
    task = script.client().close("t-1", success=True, quality=1.0)
    assert task.task_id == "t-1" and len(script.requests) == 3


def test_retries_429_and_connection_errors_even_for_decide() -> None:
    refused = httpx.ConnectError("connection refused")
    script = Recorder(refused, unavailable(429, **{"Retry-After": "0"}), httpx.Response(422))
    with pytest.raises(ClientError) as caught:
        script.client().decide("t-1", step())
    assert caught.value.status == 422 and len(script.requests) == 3


def test_validation_errors_are_never_retried() -> None:
    error = {"error": {"code": "invalid_request", "message": "bad", "field": "quality"}}
    script = Recorder(httpx.Response(422, json=error))
    with pytest.raises(ClientError) as caught:
        script.client().report("d-1", True, 2.0, 1, 1)
    assert (caught.value.code, caught.value.field) == ("invalid_request", "quality")
    assert len(script.requests) == 1


def test_exhausted_retries_raise_a_retriable_error_with_the_last_status() -> None:
    script = Recorder(unavailable())
    with pytest.raises(TransientError) as caught:
        script.client().close("t-1", success=True, quality=1.0)
    assert (caught.value.status, caught.value.code, caught.value.retriable) == (
        503,
        "unavailable",
        True,
    )
    assert len(script.requests) == FAST.attempts


def test_decide_is_not_resent_after_a_lost_answer() -> None:
    script = Recorder(httpx.ReadTimeout("timed out"), httpx.Response(200, json={}))
    with pytest.raises(TransientError, match="may have been applied"):
        script.client().decide("t-1", step())
    assert len(script.requests) == 1


def test_open_task_resent_after_lost_answer_reads_back_the_task() -> None:
    conflict = httpx.Response(409, json={"error": {"code": "conflict", "message": "exists"}})

    def read_back(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET"
        return httpx.Response(200, json=task_json(request.url.path.rsplit("/", 1)[-1]))

    script = Recorder(httpx.ReadError("reset"), conflict, read_back)
    task = script.client().open_task("research", budget())
    sent_id = script.body(0)["task_id"]
    assert script.body(1)["task_id"] == sent_id == task.task_id
    assert [r.method for r in script.requests] == ["POST", "POST", "GET"]


def test_conflict_without_a_lost_answer_is_an_error() -> None:
    conflict = httpx.Response(409, json={"error": {"code": "conflict", "message": "exists"}})
    script = Recorder(conflict)
    with pytest.raises(ClientError, match="409 conflict"):
        script.client().open_task("research", budget(), task_id="t-1")
    assert len(script.requests) == 1


def test_bearer_key_and_correction_body() -> None:
    script = Recorder(httpx.Response(202, json={"correction_id": "c-1"}))
    answer = script.client(api_key="br_k").correct(
        decision_id="d-1", rating="down", note="too weak"
    )
    assert answer == {"correction_id": "c-1"}
    assert script.requests[0].headers["authorization"] == "Bearer br_k"
    assert script.requests[0].url.path == "/v1/corrections"
    assert script.body() == {"decision_id": "d-1", "rating": "down", "note": "too weak"}


def test_non_json_error_keeps_status_and_text() -> None:
    script = Recorder(httpx.Response(404, text="no such route"))
    with pytest.raises(ClientError, match="404 http_404: no such route"):
        script.client().correct(task_id="t-1")


def test_task_scope_closes_failed_on_exception() -> None:
    script = Recorder(
        lambda request: httpx.Response(
            201 if request.url.path == "/v1/tasks" else 200, json=task_json("t-x", "closed")
        )
    )
    with pytest.raises(RuntimeError, match="agent crashed"), script.client().task("r", budget()):
        raise RuntimeError("agent crashed")
    assert script.requests[-1].url.path == "/v1/tasks/t-x/close"
    assert script.body() == {"success": False, "quality": 0.0}


def test_task_scope_uses_the_quality_set_on_the_handle() -> None:
    script = Recorder(lambda request: httpx.Response(200, json=task_json("t-y")))
    with script.client().task("r", budget()) as task:
        task.quality = 0.4
    assert script.body() == {"success": True, "quality": 0.4}


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=5, base_delay=0.1, max_delay=0.5)
    rng = random.Random(3)
    delays = [policy.delay(n, rng) for n in range(6) for _ in range(50)]
    assert all(0 <= d <= 0.5 for d in delays)
    assert max(policy.delay(0, rng) for _ in range(50)) <= 0.1
    assert policy.delay(0, rng, retry_after=0.3) == 0.3
    assert policy.delay(0, rng, retry_after=30) == 0.5


def test_decide_sends_the_prompt_only_when_given(client: TestClient) -> None:
    router = BudgetRouterClient(http=client)
    task = router.open_task("research", Budget(**budget()), trust_domain="eng")
    decision = router.decide(task.task_id, Step(**step()), prompt="Summarise the report.")
    assert decision.model is not None
    script = Recorder(httpx.Response(503))
    with pytest.raises(ClientError):
        script.client().decide("t-1", Step(**step()), prompt="Summarise the report.")
    assert script.body()["prompt"] == "Summarise the report."
    with pytest.raises(ClientError):
        script.client().decide("t-1", Step(**step()))
    assert "prompt" not in script.body()
