"""Operator actions: reload the trust-domain policy file; see, pin, unpin and roll back the
champion model. Every champion action is audited in the registry with the admin key as actor."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from router_service.auth import AdminDep, Principal
from router_service.champion import open_registry
from router_service.deps import StateDep
from router_service.errors import ConfigError, Conflict, InvalidRequest, Unavailable
from router_service.state import RouterState

if TYPE_CHECKING:
    from learner.registry import ModelRegistry

router = APIRouter(prefix="/v1/admin", tags=["admin"])
HISTORY_SHOWN = 20


class ChampionAction(BaseModel):
    """Why an operator pins, unpins or rolls back the champion (kept in the audit log)."""

    reason: str = Field(min_length=1, max_length=500, description="why, for the audit log")


@router.post("/trust-policy/reload")
async def reload_trust_policy(state: StateDep, admin: AdminDep) -> dict[str, str]:
    """Re-read the policy file; a bad file keeps the policy in force and says what is wrong."""
    try:
        version = state.trust.reload()
    except ConfigError as exc:
        raise InvalidRequest(
            f"{exc.message}; kept policy version {state.trust.version}",
            field="trust_policy_path",
            value=str(state.trust.path),
        ) from exc
    return {"version": version}


@router.get("/champion")
def champion_status(state: StateDep, admin: AdminDep) -> dict[str, Any]:
    """The registry's champion, challenger and pin, what this router serves, recent moves."""
    from learner.registry import CHALLENGER, CHAMPION

    with _registry(state) as registry:
        pin = registry.pin()
        return {
            "champion": registry.get_alias_version(CHAMPION),
            "challenger": registry.get_alias_version(CHALLENGER),
            "pinned": None if pin is None else _pin_json(pin.version, pin.actor, pin.reason),
            "serving": state.refresher.status() if state.refresher else {},
            "history": [m.to_dict() for m in registry.history()[-HISTORY_SHOWN:]],
        }


@router.post("/champion/pin")
def pin_champion(body: ChampionAction, state: StateDep, admin: AdminDep) -> dict[str, Any]:
    """Stop the automatic gate from moving the champion (manual moves still work)."""
    with _registry(state) as registry:
        pin = registry.set_pin(_actor(admin), body.reason)
    return {"pinned": _pin_json(pin.version, pin.actor, pin.reason)}


@router.post("/champion/unpin")
def unpin_champion(body: ChampionAction, state: StateDep, admin: AdminDep) -> dict[str, Any]:
    """Let the automatic gate move the champion again."""
    with _registry(state) as registry:
        return registry.clear_pin(_actor(admin), body.reason).to_dict()


@router.post("/champion/rollback")
def rollback_champion(body: ChampionAction, state: StateDep, admin: AdminDep) -> dict[str, Any]:
    """Move the champion back to the one before it; routers swap within a poll interval."""
    with _registry(state) as registry:
        return registry.rollback(_actor(admin), body.reason).to_dict()


def _actor(admin: Principal) -> str:
    return f"admin key {admin.key_id}" if admin.key_id else f"admin {admin.tenant}"


@contextmanager
def _registry(state: RouterState) -> Iterator[ModelRegistry]:
    """The registry, with its errors as HTTP errors: 409 for a state that forbids the action,
    503 when it cannot be reached right now."""
    from learner.registry import RegistryError

    registry = open_registry(state.settings)
    if registry is None:
        raise Conflict("no model registry yet: no version has been registered", field="champion")
    try:
        yield registry
    except RegistryError as exc:
        if exc.retriable:
            raise Unavailable(str(exc), field="champion") from exc
        raise Conflict(str(exc), field="champion") from exc


def _pin_json(version: str, actor: str, reason: str) -> dict[str, str]:
    return {"version": version, "actor": actor, "reason": reason}
