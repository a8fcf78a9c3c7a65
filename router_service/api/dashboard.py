"""The operator dashboard: one static page and the JSON it polls."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from router_service.activity import ActivityLog, decision_row, explanation
from router_service.auth import Principal, PrincipalDep
from router_service.errors import NotFound, Unavailable

router = APIRouter(tags=["dashboard"])
"""The JSON endpoints; the app mounts them behind the API-key check."""
page_router = APIRouter(tags=["dashboard"])
"""The page and its two assets, public: they hold no data."""
log = logging.getLogger("budget_router.dashboard")
STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}


def _activity(request: Request) -> ActivityLog:
    state = getattr(request.app.state, "router", None)
    activity = getattr(state, "activity", None)
    if not isinstance(activity, ActivityLog):
        raise Unavailable(
            "the activity log is not configured: expected app.state.router.activity "
            "to be a router_service.activity.ActivityLog"
        )
    return activity


def system_status(request: Request) -> dict[str, Any]:
    """Policy, champion/challenger, lambdas and learner lag, as far as the process knows them."""
    state = getattr(request.app.state, "router", None)
    system: dict[str, Any] = {
        "policy_version": getattr(getattr(state, "policy", None), "version", None)
    }
    status = getattr(state, "system_status", None)
    if callable(status):
        try:
            extra = status()
        except Exception as exc:  # the dashboard must render even when a part is down
            log.warning("system_status failed", exc_info=True)
            system["error"] = f"system_status() failed: {type(exc).__name__}: {exc}"
        else:
            if isinstance(extra, dict):
                system.update(extra)
    return system


@page_router.get("/dashboard", include_in_schema=False)
async def dashboard_page() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html", media_type="text/html")


@page_router.get("/dashboard/{asset}", include_in_schema=False)
async def dashboard_asset(asset: str) -> FileResponse:
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise NotFound(
            f"unknown dashboard asset {asset!r}; expected one of {sorted(ASSETS)}",
            field="asset",
            value=asset,
        )
    return FileResponse(STATIC / asset, media_type=media_type)


def _tenant(principal: Principal) -> str | None:
    """Whose activity the caller may see: its own tenant's, or everyone's for an admin."""
    return None if principal.admin else principal.tenant


@router.get("/v1/dashboard/summary")
def summary(
    request: Request,
    principal: PrincipalDep,
    lam: float = Query(
        0.0, ge=0, allow_inf_nan=False, description="lambda in reward = quality - lambda * cost"
    ),
    tasks: int = Query(25, ge=1, le=500, description="how many recent tasks to list"),
) -> dict[str, Any]:
    """Every aggregation over the recent activity, plus the system block."""
    body = _activity(request).summary(lam=lam, recent_tasks=tasks, tenant=_tenant(principal))
    body["system"] = system_status(request)
    return body


@router.get("/v1/dashboard/decisions")
def decisions(
    request: Request,
    principal: PrincipalDep,
    q: str = Query("", max_length=200, description="substring of id, task, model, action, domain"),
    limit: int = Query(50, ge=1, le=500),
) -> list[dict[str, Any]]:
    """Recent decisions, most recent first, filtered by ``q``."""
    found = _activity(request).search(q, limit, tenant=_tenant(principal))
    return [decision_row(r) for r in found]


@router.get("/v1/dashboard/decisions/{decision_id}")
def decision_detail(request: Request, principal: PrincipalDep, decision_id: str) -> dict[str, Any]:
    """One decision's full explanation, while it is still in the log."""
    record = _activity(request).get(decision_id, tenant=_tenant(principal))
    if record is None:
        raise NotFound(
            f"decision {decision_id!r} is not in the activity log (unknown or evicted)",
            field="decision_id",
            value=decision_id,
        )
    return explanation(record)
