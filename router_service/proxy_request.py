"""Reading an OpenAI chat-completions request for the proxy, and booking its provider usage."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

import orjson

from router_service.errors import InvalidRequest
from router_service.providers import Route
from router_service.schemas import ID_PATTERN, MAX_STEP_TOKENS, OutcomeReport, StepKind

TASK_HEADER = "x-budget-router-task"
KIND_HEADER = "x-budget-router-step-kind"
TYPE_HEADER = "x-budget-router-step-type"
CONFIRMED_HEADER = "x-budget-router-confirmed"
METADATA_KEYS = ("budget_router_task", "step_kind", "step_type", "confirmed")
LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")
CHARS_PER_TOKEN = 4
DEFAULT_KIND = "execution"
DEFAULT_TYPE = "chat"
TASK_FIELD = "X-Budget-Router-Task header or metadata.budget_router_task"


@dataclass(frozen=True, slots=True)
class ProxyStep:
    """What the proxy reads from a chat request: the task, the step and its sizes."""

    task_id: str
    kind: str
    type: str
    input_tokens: int
    expected_output_tokens: int
    stream: bool
    confirmed: bool


def read_step(body: Any, headers: Mapping[str, str], default_output_tokens: int) -> ProxyStep:
    """The step a chat request names; a clear 4xx naming the field when it is malformed."""
    if not isinstance(body, dict):
        raise InvalidRequest(
            "body: expected a JSON object (a chat completions request)", field="body"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "messages: expected a non-empty list", field="messages", value=_scalar(messages)
        )
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata: expected an object", field="metadata")
    task_id = headers.get(TASK_HEADER) or metadata.get("budget_router_task")
    if not isinstance(task_id, str) or not task_id:
        raise InvalidRequest(
            f"{TASK_FIELD}: expected the id of an open task (POST /v1/tasks)", field=TASK_FIELD
        )
    if not re.fullmatch(ID_PATTERN, task_id):
        raise InvalidRequest(
            f"{TASK_FIELD}: expected an id matching {ID_PATTERN}", field=TASK_FIELD, value=task_id
        )
    kind = headers.get(KIND_HEADER) or metadata.get("step_kind") or DEFAULT_KIND
    if kind not in get_args(StepKind):
        raise InvalidRequest(
            f"step kind: expected one of {list(get_args(StepKind))} "
            f"(X-Budget-Router-Step-Kind header or metadata.step_kind)",
            field="step_kind",
            value=_scalar(kind),
        )
    step_type = headers.get(TYPE_HEADER) or metadata.get("step_type") or DEFAULT_TYPE
    if not isinstance(step_type, str) or len(step_type) > 64:
        raise InvalidRequest(
            "step type: expected text of at most 64 characters "
            "(X-Budget-Router-Step-Type header or metadata.step_type)",
            field="step_type",
            value=_scalar(step_type),
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest(
            "stream: expected true or false", field="stream", value=_scalar(stream)
        )
    confirmed = headers.get(CONFIRMED_HEADER, "").lower() == "true" or metadata.get("confirmed")
    return ProxyStep(
        task_id=task_id,
        kind=kind,
        type=step_type,
        input_tokens=estimate_input_tokens(body),
        expected_output_tokens=_output_limit(body) or default_output_tokens,
        stream=stream,
        confirmed=confirmed is True,
    )


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """About a token per four characters of the messages and tools the request sends."""
    sent = orjson.dumps(body.get("messages")) + orjson.dumps(body.get("tools"))
    return max(1, len(sent) // CHARS_PER_TOKEN)


def _output_limit(body: dict[str, Any]) -> int | None:
    limits = []
    for field in LIMIT_FIELDS:
        value = body.get(field)
        if value is None:
            continue
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not 1 <= value <= MAX_STEP_TOKENS
        ):
            raise InvalidRequest(
                f"{field}: expected a positive integer of at most {MAX_STEP_TOKENS}",
                field=field,
                value=_scalar(value),
            )
        limits.append(value)
    return min(limits, default=None)


def forward_body(body: dict[str, Any], route: Route, grant: int, stream: bool) -> dict[str, Any]:
    """The request for the provider: its model name, output caps at the grant, usage asked for."""
    forward = {k: v for k, v in body.items() if k != "metadata"}
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k not in METADATA_KEYS}
    if metadata:
        forward["metadata"] = metadata
    forward["model"] = route.model_name
    named = [field for field in LIMIT_FIELDS if forward.get(field) is not None]
    for field in named:
        forward[field] = min(forward[field], grant)
    if not named:
        forward[route.token_limit_field] = grant
    if stream:
        forward["stream_options"] = {**(forward.get("stream_options") or {}), "include_usage": True}
    return forward


def usage_outcome(
    decision_id: str, usage: Any, quality: float, latency_ms: float
) -> OutcomeReport | None:
    """The outcome an OpenAI ``usage`` block books (reasoning is part of completion tokens)."""
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    cached = _count(usage.get("prompt_tokens_details"), "cached_tokens")
    reasoning = min(_count(usage.get("completion_tokens_details"), "reasoning_tokens"), completion)
    return OutcomeReport(
        decision_id=decision_id,
        success=True,
        quality=quality,
        input_tokens=prompt,
        output_tokens=completion - reasoning,
        reasoning_tokens=reasoning,
        cached_input_tokens=min(cached, prompt),
        latency_ms=latency_ms,
    )


def _count(block: Any, key: str) -> int:
    """A usage count; an absurd one is booked at the most a step may name, not refused."""
    value = block.get(key) if isinstance(block, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return 0
    return min(value, MAX_STEP_TOKENS)


def _scalar(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | None) else None
