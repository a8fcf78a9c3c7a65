"""The FastAPI application: ``create_app(settings)`` wires routes, errors and resources."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from router_service.api import (
    admin,
    corrections,
    dashboard,
    decisions,
    health,
    models,
    outcomes,
    proxy,
    tasks,
)
from router_service.auth import (
    Unauthorized,
    bootstrap_admin,
    get_principal,
    keys_router,
    unauthorized_handler,
)
from router_service.cpu_latency import hold_cpu_latency
from router_service.errors import RouterError
from router_service.metrics import metrics_router
from router_service.policy_refresh import PolicyRefresher
from router_service.providers import Providers
from router_service.realtime import hold_realtime
from router_service.settings import Settings
from router_service.state import RouterState

log = logging.getLogger("budget_router.app")
SWITCH_INTERVAL_S = 0.0005
_HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}


def create_app(settings: Settings) -> FastAPI:
    """A router app for ``settings``; resources are built when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        latency = settings.cpu_latency_us
        cpu_latency = None if latency is None else hold_cpu_latency(latency)
        priority = settings.realtime_priority
        # Before any thread is started: the state's threads inherit the policy.
        release_realtime = None if priority is None else hold_realtime(priority)
        state = RouterState.build(settings)
        app.state.router = state
        admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
        generated = bootstrap_admin(state.auth, admin_key)
        if generated is not None:
            print(  # shown once: only its hash is stored
                f"budget-router: generated admin API key (shown once, stored hashed): {generated}",
                flush=True,
            )
        state.metrics.track_spool_depth(lambda: state.publisher.depth)
        refresher = PolicyRefresher(state)
        refresher.check_now()
        refresher.start()
        state.refresher = refresher
        app.state.providers = Providers(settings.providers, settings.proxy)
        sweeper = asyncio.create_task(_expire_reservations(state))
        gc.collect()
        gc.freeze()  # start-up objects never need collecting: keeps collection pauses short
        # Background threads (spool, delivery, refresh, logs) give the GIL back to the event
        # loop within 0.5 ms instead of CPython's default 5 ms: bounds their cost to a request.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            yield
        finally:
            sweeper.cancel()
            await app.state.providers.aclose()
            refresher.stop()
            state.close()
            if cpu_latency is not None:
                cpu_latency.close()
            if release_realtime is not None:
                release_realtime()

    app = FastAPI(
        title="budget-router",
        summary="Per-step LLM routing for agents under explicit per-task budgets.",
        version="0.1.0",
        lifespan=lifespan,
    )
    # Routes match in the order included: the per-step endpoints first, so a decision or an
    # outcome is not tried against every other route before its own.
    for module in (decisions, outcomes, tasks, corrections, proxy, health, models, admin):
        app.include_router(module.router)
    app.include_router(dashboard.page_router)
    app.include_router(dashboard.router, dependencies=[Depends(get_principal)])
    app.include_router(keys_router)
    app.include_router(metrics_router)
    app.add_exception_handler(Unauthorized, unauthorized_handler)
    app.add_exception_handler(RouterError, _router_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    return app


async def _expire_reservations(state: RouterState) -> None:
    """Book overdue reservations at their estimate; forget tasks closed long enough ago.

    A failed sweep (the store unreachable for a moment, say) is logged and tried again at the
    next interval: the sweeper must outlive it, or reservations would stop expiring.
    """
    while True:
        await asyncio.sleep(state.settings.expiry_sweep_seconds)
        try:
            await state.ledger_bound(state.sweep)
        except Exception:
            log.exception(
                "reservation sweep failed; next try in %g s", state.settings.expiry_sweep_seconds
            )


async def _router_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RouterError)
    return JSONResponse(exc.to_body(), status_code=exc.status_code)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field, the value sent and what was expected."""
    assert isinstance(exc, RequestValidationError)
    fields = [_field_error(e) for e in exc.errors()]
    message = "; ".join(f"{f['field']}: {f['expected']}" for f in fields)
    return JSONResponse(
        {"error": {"code": "invalid_request", "message": message, "fields": fields}},
        status_code=422,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 4xx (a body not UTF-8, an unknown path or method) in the service's shape."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 400:
        field, expected = "body", "a UTF-8 encoded JSON document"
    elif exc.status_code == 404:
        field, expected = "path", f"one of the paths in /openapi.json, not {path!r}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        field, expected = "method", f"one of {allowed or 'the methods in /openapi.json'} on {path}"
    else:
        field, expected = "request", "a request as described in /openapi.json"
    body = {
        "error": {
            "code": _HTTP_CODES.get(exc.status_code, "http_error"),
            "message": f"{field}: {exc.detail}; expected {expected}",
            "field": field,
        }
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _field_error(error: dict[str, Any]) -> dict[str, Any]:
    if error.get("type") == "json_invalid":  # its location is a character offset, not a field
        position = error.get("loc", ("body", "?"))[-1]
        reason = error.get("ctx", {}).get("error", "JSON decode error")
        return {
            "field": "body",
            "value": None,
            "expected": f"a JSON document ({reason} at character {position})",
        }
    location = [str(part) for part in error.get("loc", ()) if part not in ("body", "path")]
    value = error.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # JSON has no inf or nan: echo them as text
    return {
        "field": ".".join(location) or "body",
        "value": value if isinstance(value, str | int | float | bool | None) else None,
        "expected": error.get("msg", "a valid value"),
    }
