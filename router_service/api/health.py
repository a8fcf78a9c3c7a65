"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from router_service.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: StateDep) -> dict[str, Any]:
    """Ready, with the served model, its source and whether it is stale."""
    return {
        "status": "ready",
        "models": len(state.catalog.snapshot()),
        **state.system_status(),
        "policy_version": state.policy.version,
    }
