"""FastAPI dependencies that reach the lifespan's resources."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from router_service.state import RouterState


async def get_state(request: Request) -> RouterState:
    return request.app.state.router


StateDep = Annotated[RouterState, Depends(get_state)]
