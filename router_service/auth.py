"""API keys bound to a tenant and its trust domains; FastAPI dependencies that enforce them."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from router_service.errors import ConfigError, InvalidRequest, NotFound, RouterError

KEY_PREFIX = "br_"
ADMIN_ENV = "BUDGET_ROUTER_ADMIN_KEY"
MIN_ENV_KEY_LENGTH = 24
TENANT_PATTERN = r"^[A-Za-z0-9._:@-]{1,64}$"
_FILE_VERSION = 1


class Unauthorized(RouterError):
    """No key, or a key the service does not know; answered with ``WWW-Authenticate``."""

    status_code = 401
    code = "unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(RouterError):
    """A valid key that may not do this: a trust domain it lacks, or an admin operation."""

    status_code = 403
    code = "forbidden"


@dataclass(frozen=True)
class Principal:
    """Who called: the tenant a key belongs to, the trust domains it may use, admin or not."""

    tenant: str
    trust_domains: frozenset[str]
    admin: bool = False
    key_id: str | None = None

    def may_use(self, domain: str) -> bool:
        """Whether this key may open tasks in trust domain ``domain``."""
        return "*" in self.trust_domains or domain in self.trust_domains


@dataclass(frozen=True)
class _Entry:
    key_id: str
    digest: str
    principal: Principal
    created_at: str
    persisted: bool = True

    def to_json(self) -> dict[str, Any]:
        p = self.principal
        return {
            "key_id": self.key_id,
            "sha256": self.digest,
            "tenant": p.tenant,
            "trust_domains": sorted(p.trust_domains),
            "admin": p.admin,
            "created_at": self.created_at,
        }


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeyStore:
    """Keys kept as sha256 digests in a JSON file; plaintext is returned once at creation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: list[_Entry] = self._load()

    def _load(self) -> list[_Entry]:
        if not self.path.exists():
            return []
        try:
            raw = json.loads(self.path.read_text())
            return [
                _Entry(
                    key_id=item["key_id"],
                    digest=item["sha256"],
                    principal=Principal(
                        tenant=item["tenant"],
                        trust_domains=frozenset(item["trust_domains"]),
                        admin=bool(item["admin"]),
                        key_id=item["key_id"],
                    ),
                    created_at=item["created_at"],
                )
                for item in raw["keys"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"API key file {self.path} is unreadable: expected "
                '{"version": 1, "keys": [{"key_id", "sha256", "tenant", "trust_domains", '
                f'"admin", "created_at"}}, ...]}} ({exc})'
            ) from exc

    def _save(self) -> None:
        body = {
            "version": _FILE_VERSION,
            "keys": [e.to_json() for e in self._entries if e.persisted],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(body, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def create_key(self, tenant: str, domains: list[str], admin: bool = False) -> str:
        """A new key for ``tenant`` limited to ``domains`` (``["*"]`` for all); plaintext once."""
        if not re.match(TENANT_PATTERN, tenant):
            raise InvalidRequest(
                f"tenant {tenant!r} is not valid: expected 1-64 letters, digits or ._:@-",
                field="tenant",
                value=tenant,
            )
        if not domains or not all(isinstance(d, str) and d for d in domains):
            raise InvalidRequest(
                f"trust domains {domains!r}: expected a non-empty list of names",
                field="trust_domains",
            )
        key_id = secrets.token_hex(6)
        token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        entry = _Entry(
            key_id=key_id,
            digest=_digest(token),
            principal=Principal(tenant, frozenset(domains), admin, key_id),
            created_at=datetime.now(UTC).isoformat(),
        )
        with self._lock:
            self._entries.append(entry)
            self._save()
        return token

    def trust_in_memory(self, token: str, tenant: str, domains: list[str], admin: bool) -> None:
        """Accept ``token`` for this process only; its digest is never written to the file."""
        entry = _Entry(
            key_id="env",
            digest=_digest(token),
            principal=Principal(tenant, frozenset(domains), admin, "env"),
            created_at=datetime.now(UTC).isoformat(),
            persisted=False,
        )
        with self._lock:
            self._entries.append(entry)

    def revoke(self, key_id: str) -> bool:
        """Forget the stored key ``key_id``; False if there was none."""
        with self._lock:
            kept = [e for e in self._entries if not (e.persisted and e.key_id == key_id)]
            if len(kept) == len(self._entries):
                return False
            self._entries = kept
            self._save()
        return True

    def has_admin(self) -> bool:
        """Whether any stored or in-memory key is an admin key."""
        return any(e.principal.admin for e in self._entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of ``token``, or None; digests are compared in constant time."""
        digest = _digest(token)
        found: Principal | None = None
        for entry in list(self._entries):
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        return found


def bootstrap_admin(store: ApiKeyStore, env_admin_key: str | None) -> str | None:
    """Install the admin key: the env key in memory, else a generated one returned once."""
    if env_admin_key is not None:
        if len(env_admin_key) < MIN_ENV_KEY_LENGTH:
            raise ConfigError(
                f"{ADMIN_ENV} is too short: expected at least {MIN_ENV_KEY_LENGTH} characters"
            )
        store.trust_in_memory(env_admin_key, tenant="admin", domains=["*"], admin=True)
        return None
    if store.has_admin():
        return None
    return store.create_key("admin", ["*"], admin=True)


async def get_principal(request: Request) -> Principal:
    """The caller of ``request`` from ``Authorization: Bearer KEY``; 401 otherwise."""
    header = request.headers.get("authorization")
    if header is None:
        raise Unauthorized(
            "missing Authorization header: expected 'Authorization: Bearer <api key>'",
            field="Authorization",
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "malformed Authorization header: expected 'Bearer <api key>'", field="Authorization"
        )
    store: ApiKeyStore = request.app.state.router.auth
    principal = store.authenticate(token.strip())
    if principal is None:
        raise Unauthorized("unknown or revoked API key", field="Authorization")
    return principal


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    """The caller, who must hold an admin key; 403 otherwise."""
    if not principal.admin:
        raise Forbidden(
            f"tenant {principal.tenant!r}: this operation needs an admin key",
            field="Authorization",
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(get_admin)]


def assert_task_visible(principal: Principal, task_tenant: str, task_id: str = "") -> None:
    """404 for another tenant's task, worded like an unknown task so existence is not leaked."""
    if principal.admin or hmac.compare_digest(principal.tenant, task_tenant):
        return
    raise NotFound(f"unknown task {task_id!r}", field="task_id", value=task_id)


def assert_domain_allowed(principal: Principal, domain: str) -> None:
    """403 unless the caller's key may use trust domain ``domain``."""
    if not principal.may_use(domain):
        raise Forbidden(
            f"tenant {principal.tenant!r} may not use trust domain {domain!r}: "
            f"expected one of {sorted(principal.trust_domains)}",
            field="trust_domain",
            value=domain,
        )


async def unauthorized_handler(request: Request, exc: Exception) -> JSONResponse:
    """The 401 body in the service's error format, with ``WWW-Authenticate: Bearer``."""
    assert isinstance(exc, Unauthorized)
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)


class KeyCreate(BaseModel):
    tenant: str = Field(pattern=TENANT_PATTERN)
    trust_domains: list[str] = Field(min_length=1, max_length=64)
    admin: bool = False


class KeyCreated(BaseModel):
    api_key: str = Field(description="shown once; the service keeps only its sha256")
    key_id: str
    tenant: str
    trust_domains: list[str]
    admin: bool


keys_router = APIRouter(prefix="/v1/admin/keys", tags=["admin"])


@keys_router.post("", status_code=status.HTTP_201_CREATED)
async def create_api_key(request: Request, _: AdminDep, body: KeyCreate) -> KeyCreated:
    store: ApiKeyStore = request.app.state.router.auth
    token = store.create_key(body.tenant, body.trust_domains, body.admin)
    return KeyCreated(
        api_key=token,
        key_id=token.removeprefix(KEY_PREFIX).split("_", 1)[0],
        tenant=body.tenant,
        trust_domains=body.trust_domains,
        admin=body.admin,
    )


@keys_router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(request: Request, _: AdminDep, key_id: str) -> None:
    store: ApiKeyStore = request.app.state.router.auth
    if not store.revoke(key_id):
        raise NotFound(f"unknown key {key_id!r}", field="key_id", value=key_id)
