"""``POST /v1/chat/completions``: an OpenAI-compatible proxy that routes, forwards and books.

The request names a task; the router decides the step's model with the usual decider and
governor, forwards the request to that model's provider with the output capped at the grant,
and books the provider's ``usage`` as the step's outcome. A failed provider call is booked as a
failed step and, if the governor allows, retried once on another model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import anyio
import httpx
import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from router_service.api.decisions import serve_decision
from router_service.api.outcomes import book_outcome
from router_service.api.tasks import visible_task
from router_service.auth import PrincipalDep
from router_service.deps import StateDep
from router_service.errors import Conflict, InvalidRequest, RouterError
from router_service.providers import ProviderFailure, Providers, retriable
from router_service.proxy_request import (
    TASK_FIELD,
    ProxyStep,
    forward_body,
    read_step,
    usage_outcome,
)
from router_service.schemas import DecideRequest, OutcomeReport, Signals, Step, Task
from router_service.served import ServedDecision
from router_service.state import RouterState

router = APIRouter(prefix="/v1", tags=["proxy"])
log = logging.getLogger("budget_router.proxy")
STOP_STATUS = {"abort": 402, "skip_optional": 409, "require_confirmation": 409}
NO_USAGE = "the provider sent no usage block: booked the grant-based estimate"
HUNG_UP = "the agent closed the stream before its usage block: booked the grant-based estimate"


class NoProviderEndpoint(RouterError):
    """No candidate model has a provider endpoint configured."""

    status_code = 503
    code = "no_provider_endpoint"


@router.post("/chat/completions")
async def chat_completions(request: Request, state: StateDep, principal: PrincipalDep) -> Response:
    started = time.perf_counter()
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body: expected JSON ({exc})", field="body") from exc
    step = read_step(body, request.headers, state.settings.proxy.default_output_tokens)
    task = visible_task(state, principal, step.task_id).task
    if task.status != "open":
        raise Conflict(f"task {step.task_id!r} is closed", field=TASK_FIELD, value=step.task_id)
    step = _within_output_budget(state, task, step)
    providers: Providers = request.app.state.providers
    models = state.catalog.snapshot()
    candidates = [m.id for m in models.values() if providers.serves(m.provider)]
    if not candidates:
        raise NoProviderEndpoint(
            "no catalog model's provider has an endpoint: configure BUDGET_ROUTER_PROVIDERS "
            f"(catalog providers: {sorted({m.provider for m in models.values()})})",
            field="providers",
        )
    first = _decide_request(step, candidates, 0)
    decision = await serve_decision(state, first, task, started)
    failed: tuple[ServedDecision, ProviderFailure] | None = None
    while decision.is_step:
        assert decision.model is not None
        route = providers.route(models[decision.model])
        forward = forward_body(body, route, decision.max_output_tokens, step.stream)
        sent = time.perf_counter()
        try:
            response = await providers.open(route, forward, step.stream)
        except ProviderFailure as failure:
            await _book_failure(state, decision, task, failure, sent)
            log.warning("provider failed", extra={"decision_id": decision.decision_id})
            left = _fallback_candidates(candidates, models, decision.model, failure)
            if failed is not None or not left:
                return _failure_response(failure, decision, failed)
            failed = (decision, failure)
            fallback = _decide_request(step, left, 1)
            decision = await serve_decision(state, fallback, task, time.perf_counter())
            continue
        headers = _headers(decision, failed)
        if step.stream:
            relay = _relay(state, decision, task, step, response, sent)
            return StreamingResponse(relay, media_type="text/event-stream", headers=headers)
        await _book_usage(state, decision, task, step, _json(response).get("usage"), sent)
        return Response(response.content, media_type="application/json", headers=headers)
    if failed is not None:
        return _failure_response(failed[1], decision, failed)
    return _stopped(decision)


def _within_output_budget(state: RouterState, task: Task, step: ProxyStep) -> ProxyStep:
    """A request's output cap is a ceiling, not a forecast: expect at most what is left."""
    left = task.budget.max_output_tokens - state.ledger.view(task.task_id).output_tokens_used
    return replace(step, expected_output_tokens=max(1, min(step.expected_output_tokens, left)))


def _fallback_candidates(
    candidates: list[str], models: dict[str, Any], failed_model: str, failure: ProviderFailure
) -> list[str]:
    """Others than the failed model; none of its provider's if the provider is down or busy."""
    if failure.status is not None and not retriable(failure.status):
        return [m for m in candidates if m != failed_model]
    provider = models[failed_model].provider
    return [m for m in candidates if models[m].provider != provider]


def _decide_request(step: ProxyStep, candidates: list[str], retries: int) -> DecideRequest:
    return DecideRequest(
        task_id=step.task_id,
        step=Step(
            kind=step.kind,  # type: ignore[arg-type]  # checked by read_step
            type=step.type,
            input_tokens=step.input_tokens,
            expected_output_tokens=step.expected_output_tokens,
        ),
        signals=Signals(retries=retries),
        candidates=candidates,
        confirmed=step.confirmed,
    )


async def _relay(
    state: RouterState,
    decision: ServedDecision,
    task: Task,
    step: ProxyStep,
    response: httpx.Response,
    sent: float,
) -> AsyncIterator[bytes]:
    """Relay the provider's SSE bytes as they come; book the usage of the final chunk."""
    usage: Any = None
    pending = b""
    error: str | None = None
    missing = NO_USAGE
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                usage = _usage_in(line) or usage
    except httpx.HTTPError as exc:
        error = f"stream broke: {exc!r}"[:200]
    except (anyio.get_cancelled_exc_class(), GeneratorExit):
        missing = HUNG_UP
        raise
    finally:
        usage = _usage_in(pending) or usage
        with anyio.CancelScope(shield=True):  # book even if the agent hung up
            await response.aclose()
            if error is None:
                await _book_usage(state, decision, task, step, usage, sent, missing)
            else:
                await _book(state, decision, task, _estimate(decision, step, sent, error))


def _usage_in(line: bytes) -> Any:
    """The ``usage`` of one SSE ``data:`` line, if it carries one."""
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    if not payload.startswith(b"{"):
        return None
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return event.get("usage") if isinstance(event, dict) else None


async def _book_usage(
    state: RouterState,
    decision: ServedDecision,
    task: Task,
    step: ProxyStep,
    usage: Any,
    sent: float,
    missing: str = NO_USAGE,
) -> None:
    """Book the provider's usage; without one, the grant-based estimate, flagged."""
    quality = state.settings.proxy.neutral_quality
    report = usage_outcome(decision.decision_id, usage, quality, _ms_since(sent))
    if report is None:
        log.warning(missing, extra={"decision_id": decision.decision_id})
        report = _estimate(decision, step, sent, missing, success=True, quality=quality)
    await _book(state, decision, task, report)


def _estimate(
    decision: ServedDecision,
    step: ProxyStep,
    sent: float,
    error: str,
    success: bool = False,
    quality: float = 0.0,
) -> OutcomeReport:
    return OutcomeReport(
        decision_id=decision.decision_id,
        success=success,
        quality=quality,
        input_tokens=step.input_tokens,
        output_tokens=decision.max_output_tokens,
        latency_ms=_ms_since(sent),
        error=error,
    )


async def _book_failure(
    state: RouterState,
    decision: ServedDecision,
    task: Task,
    failure: ProviderFailure,
    sent: float,
) -> None:
    """A failed call is a failed step: nothing was generated, so no tokens are booked."""
    report = OutcomeReport(
        decision_id=decision.decision_id,
        success=False,
        quality=0.0,
        input_tokens=0,
        output_tokens=0,
        latency_ms=_ms_since(sent),
        error=failure.message[:200],
    )
    await _book(state, decision, task, report)


async def _book(
    state: RouterState, decision: ServedDecision, task: Task, report: OutcomeReport
) -> None:
    await book_outcome(state, state.tasks.decision(decision.decision_id), task, report)


def _headers(
    decision: ServedDecision, failed: tuple[ServedDecision, ProviderFailure] | None
) -> dict[str, str]:
    """Which decision served the call, so the agent can send feedback on it later."""
    headers = {
        "X-Budget-Router-Decision-Id": decision.decision_id,
        "X-Budget-Router-Action": decision.action,
    }
    if decision.model is not None:
        headers["X-Budget-Router-Model"] = decision.model
    if failed is not None:
        headers["X-Budget-Router-Fallback-From"] = failed[0].decision_id
    return headers


def _stopped(decision: ServedDecision) -> JSONResponse:
    """The governor stopped the step: an OpenAI-style error naming its rules."""
    detail = orjson.loads(decision.json)
    rules = "; ".join(f"{r['rule']} ({r['action']}): {r['detail']}" for r in detail["rules"])
    body = {
        "error": {
            "message": f"budget-router governor: {decision.action}: {rules or 'no rule detail'}",
            "type": "budget_router_governor",
            "code": decision.action,
            "param": None,
            "rules": [r["rule"] for r in detail["rules"]],
        }
    }
    status = STOP_STATUS.get(decision.action, 409)
    return JSONResponse(body, status_code=status, headers=_headers(decision, None))


def _failure_response(
    failure: ProviderFailure,
    decision: ServedDecision,
    failed: tuple[ServedDecision, ProviderFailure] | None,
) -> JSONResponse:
    """The provider's error in OpenAI shape, after the fallback (if any) was spent or refused."""
    headers = _headers(decision, failed)
    return JSONResponse(failure.openai_body(), status_code=failure.http_status, headers=headers)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
