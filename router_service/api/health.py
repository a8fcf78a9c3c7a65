"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter

from router_service.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> dict[str, str | int]:
    return {
        "status": "ready",
        "policy_version": state.policy.version,
        "models": len(state.catalog.snapshot()),
    }
