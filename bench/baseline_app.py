"""The stack's baseline: a minimal FastAPI POST that parses a small pydantic body.

Served by the same uvicorn as the router, it shows what FastAPI + pydantic + uvicorn cost on
this machine before any routing work: ``python -m uvicorn bench.baseline_app:create_app
--factory``.
"""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field


class EchoStep(BaseModel):
    """A small body shaped like a decision step."""

    task_id: str = Field(min_length=1, max_length=128)
    kind: Literal["control", "execution", "verification", "presentation", "final_synthesis"]
    input_tokens: int = Field(ge=0)


class EchoReply(BaseModel):
    task_id: str
    accepted: bool


def create_app() -> FastAPI:
    """The baseline app: ``GET /readyz`` and ``POST /v1/echo``."""
    app = FastAPI(title="baseline")

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/echo")
    async def echo(body: EchoStep) -> EchoReply:
        return EchoReply(task_id=body.task_id, accepted=body.input_tokens >= 0)

    return app
