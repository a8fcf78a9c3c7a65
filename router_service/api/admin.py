"""Operator actions: reload the trust-domain policy file."""

from __future__ import annotations

from fastapi import APIRouter

from router_service.auth import AdminDep
from router_service.deps import StateDep
from router_service.errors import ConfigError, InvalidRequest

router = APIRouter(prefix="/v1/admin", tags=["admin"])


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
