"""A small OpenAI-compatible chat server for the proxy tests, run on loopback by uvicorn."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PROMPT_TOKENS = 1_200
CACHED_TOKENS = 400
REASONING_TOKENS = 20
COMPLETION_TOKENS = 90  # at most; less if the request's cap is lower
REPLY = ["Hel", "lo ", "from ", "the ", "fake"]
HOLD_TIMEOUT_S = 10


@dataclass
class FakeProvider:
    """Records each request; fails the next ``fail_next`` ones with ``fail_status``.

    A set ``hold`` pauses a stream after its first delta until the test sets the event.
    """

    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 500
    send_usage: bool = True
    hold: threading.Event | None = None

    def reset(self) -> None:
        self.requests.clear()
        self.fail_next = 0
        self.fail_status = 500
        self.send_usage = True
        self.hold = None

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"body": body, "authorization": request.headers.get("authorization")})
        if self.fail_next > 0:
            self.fail_next -= 1
            error = {"message": "fake outage", "type": "server_error", "code": "fake_outage"}
            return JSONResponse({"error": error}, status_code=self.fail_status)
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        usage = _usage(min(cap, COMPLETION_TOKENS))
        if body.get("stream"):
            include = (body.get("stream_options") or {}).get("include_usage", False)
            usage_chunk = usage if include and self.send_usage else None
            events = self._events(body["model"], usage_chunk)
            return StreamingResponse(events, media_type="text/event-stream")
        message = {"role": "assistant", "content": "".join(REPLY)}
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage if self.send_usage else None,
            }
        )

    async def _events(self, model: str, usage: dict[str, Any] | None) -> AsyncIterator[bytes]:
        """SSE chunks as OpenAI streams them: deltas, the finish, the usage chunk, then DONE."""

        def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
            event = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": choices,
                "usage": usage,
            }
            return f"data: {json.dumps(event)}\n\n".encode()

        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
        for i, text in enumerate(REPLY):
            yield chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None}])
            if i == 0 and self.hold is not None:
                await anyio.to_thread.run_sync(self.hold.wait, HOLD_TIMEOUT_S)
        yield chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if usage is not None:
            yield chunk([], usage)
        yield b"data: [DONE]\n\n"


def _usage(completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "completion_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
    }


def billed_cost(spec: Any, completion: int) -> float:
    """What the catalog prices the fake's usage at (reasoning is part of completion)."""
    return spec.token_cost(PROMPT_TOKENS, completion, CACHED_TOKENS)
