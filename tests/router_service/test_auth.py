"""API keys: the store, the bootstrap of the admin key, and the FastAPI dependencies."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel

from router_service.auth import (
    AdminDep,
    ApiKeyStore,
    Forbidden,
    Principal,
    PrincipalDep,
    Unauthorized,
    assert_domain_allowed,
    assert_task_visible,
    bootstrap_admin,
    keys_router,
    unauthorized_handler,
)
from router_service.errors import ConfigError, InvalidRequest, NotFound, RouterError

ENV_KEY = "env-admin-key-0123456789abcdef"


class OpenBody(BaseModel):
    task_id: str
    trust_domain: str


def build_app(store: ApiKeyStore) -> FastAPI:
    """A tiny app using the dependencies the way the service's routes will."""
    app = FastAPI()
    app.state.router = SimpleNamespace(auth=store)
    owners: dict[str, str] = {}

    @app.post("/tasks", status_code=201)
    async def open_task(principal: PrincipalDep, body: OpenBody) -> dict[str, str]:
        assert_domain_allowed(principal, body.trust_domain)
        owners[body.task_id] = principal.tenant
        return {"task_id": body.task_id}

    @app.get("/tasks/{task_id}")
    async def get_task(principal: PrincipalDep, task_id: str) -> dict[str, str]:
        if task_id not in owners:
            raise NotFound(f"unknown task {task_id!r}", field="task_id", value=task_id)
        assert_task_visible(principal, owners[task_id], task_id)
        return {"task_id": task_id}

    @app.post("/admin/reload")
    async def reload(principal: AdminDep) -> dict[str, str]:
        return {"by": principal.tenant}

    async def router_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RouterError)
        return JSONResponse(exc.to_body(), status_code=exc.status_code)

    app.include_router(keys_router)
    app.add_exception_handler(RouterError, router_error)
    app.add_exception_handler(Unauthorized, unauthorized_handler)
    return app


@pytest.fixture
def store(tmp_path: Path) -> ApiKeyStore:
    return ApiKeyStore(tmp_path / "api_keys.json")


@pytest.fixture
def http(store: ApiKeyStore) -> Iterator[TestClient]:
    with TestClient(build_app(store)) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_principal_may_use_listed_domains_or_all() -> None:
    assert Principal("acme", frozenset({"eng"})).may_use("eng")
    assert not Principal("acme", frozenset({"eng"})).may_use("legal")
    assert Principal("ops", frozenset({"*"})).may_use("legal")


def test_created_key_authenticates_and_file_holds_only_its_digest(
    store: ApiKeyStore, tmp_path: Path
) -> None:
    key = store.create_key("acme", ["eng", "support"])
    principal = store.authenticate(key)
    assert principal is not None
    assert (principal.tenant, principal.trust_domains, principal.admin) == (
        "acme",
        frozenset({"eng", "support"}),
        False,
    )
    assert store.authenticate(key + "x") is None
    text = (tmp_path / "api_keys.json").read_text()
    assert key not in text
    assert stat.S_IMODE((tmp_path / "api_keys.json").stat().st_mode) == 0o600
    reloaded = ApiKeyStore(tmp_path / "api_keys.json")
    assert reloaded.authenticate(key) == principal


def test_revoked_key_no_longer_authenticates(store: ApiKeyStore) -> None:
    key = store.create_key("acme", ["eng"])
    principal = store.authenticate(key)
    assert principal is not None and principal.key_id is not None
    assert store.revoke(principal.key_id)
    assert store.authenticate(key) is None
    assert not store.revoke(principal.key_id)


@pytest.mark.parametrize(
    ("tenant", "domains", "match"),
    [
        ("", ["eng"], "tenant ''"),
        ("a b", ["eng"], "tenant 'a b'"),
        ("acme", [], "non-empty list"),
        ("acme", [""], "non-empty list"),
    ],
)
def test_create_key_rejects_bad_tenant_or_domains(
    store: ApiKeyStore, tenant: str, domains: list[str], match: str
) -> None:
    with pytest.raises(InvalidRequest, match=match):
        store.create_key(tenant, domains)


def test_unreadable_key_file_names_the_file_and_the_expected_shape(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    path.write_text('{"keys": [{"tenant": "acme"}]}')
    with pytest.raises(ConfigError, match=r"api_keys\.json is unreadable: expected"):
        ApiKeyStore(path)


def test_generated_admin_key_is_returned_once_and_persisted_hashed(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    key = bootstrap_admin(ApiKeyStore(path), env_admin_key=None)
    assert key is not None
    stored = json.loads(path.read_text())
    assert [k["admin"] for k in stored["keys"]] == [True]
    assert key not in path.read_text()
    restarted = ApiKeyStore(path)
    assert bootstrap_admin(restarted, env_admin_key=None) is None
    principal = restarted.authenticate(key)
    assert principal is not None and principal.admin


def test_env_admin_key_works_and_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    store = ApiKeyStore(path)
    assert bootstrap_admin(store, env_admin_key=ENV_KEY) is None
    principal = store.authenticate(ENV_KEY)
    assert principal is not None and principal.admin
    store.create_key("acme", ["eng"])
    assert ENV_KEY not in path.read_text()
    assert all(not k["admin"] for k in json.loads(path.read_text())["keys"])


def test_short_env_admin_key_is_refused(store: ApiKeyStore) -> None:
    with pytest.raises(ConfigError, match="BUDGET_ROUTER_ADMIN_KEY is too short"):
        bootstrap_admin(store, env_admin_key="short")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer br_nope_nope"}, {"Authorization": "Basic abc"}],
    ids=["no-key", "bad-key", "wrong-scheme"],
)
def test_missing_or_invalid_key_is_401_with_bearer_challenge(
    http: TestClient, headers: dict[str, str]
) -> None:
    response = http.get("/tasks/t-1", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert error["field"] == "Authorization"


def test_other_tenants_task_is_404_like_an_unknown_one(
    http: TestClient, store: ApiKeyStore
) -> None:
    acme = store.create_key("acme", ["eng"])
    globex = store.create_key("globex", ["eng"])
    assert (
        http.post(
            "/tasks", json={"task_id": "t-1", "trust_domain": "eng"}, headers=bearer(acme)
        ).status_code
        == 201
    )
    assert http.get("/tasks/t-1", headers=bearer(acme)).status_code == 200
    hidden = http.get("/tasks/t-1", headers=bearer(globex))
    missing = http.get("/tasks/t-404", headers=bearer(globex))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"


def test_domain_not_allowed_is_403(http: TestClient, store: ApiKeyStore) -> None:
    key = store.create_key("acme", ["eng"])
    response = http.post(
        "/tasks", json={"task_id": "t-2", "trust_domain": "legal"}, headers=bearer(key)
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["code"], error["field"], error["value"]) == ("forbidden", "trust_domain", "legal")


def test_admin_operation_needs_an_admin_key(http: TestClient, store: ApiKeyStore) -> None:
    user = store.create_key("acme", ["*"])
    admin = bootstrap_admin(store, env_admin_key=None)
    assert admin is not None
    refused = http.post("/admin/reload", headers=bearer(user))
    assert refused.status_code == 403
    assert "needs an admin key" in refused.json()["error"]["message"]
    assert http.post("/admin/reload", headers=bearer(admin)).json() == {"by": "admin"}


def test_env_admin_key_passes_admin_route(http: TestClient, store: ApiKeyStore) -> None:
    bootstrap_admin(store, env_admin_key=ENV_KEY)
    assert http.post("/admin/reload", headers=bearer(ENV_KEY)).status_code == 200


def test_admin_creates_and_revokes_keys_over_http(http: TestClient, store: ApiKeyStore) -> None:
    bootstrap_admin(store, env_admin_key=ENV_KEY)
    body = {"tenant": "acme", "trust_domains": ["eng"]}
    created = http.post("/v1/admin/keys", json=body, headers=bearer(ENV_KEY))
    assert created.status_code == 201, created.text
    key = created.json()["api_key"]
    open_body = {"task_id": "t-3", "trust_domain": "eng"}
    assert http.post("/tasks", json=open_body, headers=bearer(key)).status_code == 201
    key_id = created.json()["key_id"]
    assert http.delete(f"/v1/admin/keys/{key_id}", headers=bearer(ENV_KEY)).status_code == 204
    assert http.post("/tasks", json=open_body, headers=bearer(key)).status_code == 401
    assert http.delete(f"/v1/admin/keys/{key_id}", headers=bearer(ENV_KEY)).status_code == 404
    assert http.post("/v1/admin/keys", json=body, headers=bearer(key)).status_code == 401


def test_assert_helpers_raise_the_project_errors() -> None:
    acme = Principal("acme", frozenset({"eng"}))
    with pytest.raises(NotFound, match="unknown task 't-9'"):
        assert_task_visible(acme, "globex", "t-9")
    assert_task_visible(acme, "acme", "t-9")
    assert_task_visible(Principal("admin", frozenset({"*"}), admin=True), "globex", "t-9")
    with pytest.raises(Forbidden, match="may not use trust domain 'legal'"):
        assert_domain_allowed(acme, "legal")
