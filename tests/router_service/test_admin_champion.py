"""The admin champion endpoints: see, pin, unpin and roll back, audited, with clear errors."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from learner.registry import CHAMPION, ModelRegistry
from router_service.app import create_app
from tests.conftest import ADMIN_HEADERS
from tests.router_service.test_champion import register, settings_for


def test_without_a_registry_the_champion_endpoints_say_so(tmp_path: Path) -> None:
    with TestClient(create_app(settings_for(tmp_path)), headers=ADMIN_HEADERS) as client:
        response = client.get("/v1/admin/champion")
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["field"] == "champion" and "no version has been registered" in error["message"]


def test_pin_rollback_and_unpin_are_audited_with_the_admin_key(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    registry = ModelRegistry.embedded(settings.data_dir)
    first, second = register(registry, 1), register(registry, 2)
    registry.promote(first, "gate", "first")
    registry.promote(second, "gate", "better")
    with TestClient(create_app(settings), headers=ADMIN_HEADERS) as client:
        view = client.get("/v1/admin/champion").json()
        assert (view["champion"], view["challenger"], view["pinned"]) == (second, second, None)
        assert view["serving"]["champion_version"] == second

        missing = client.post("/v1/admin/champion/pin", json={})
        assert missing.status_code == 422 and missing.json()["error"]["fields"][0]["field"] == (
            "reason"
        )
        pinned = client.post("/v1/admin/champion/pin", json={"reason": "incident 7"}).json()
        actor = pinned["pinned"]["actor"]
        assert pinned["pinned"]["version"] == second and actor.startswith("admin")
        assert registry.pin() is not None and registry.pin().reason == "incident 7"  # type: ignore[union-attr]

        rolled = client.post("/v1/admin/champion/rollback", json={"reason": "errors up"})
        assert rolled.status_code == 200, rolled.text
        assert (rolled.json()["from_version"], rolled.json()["to_version"]) == (second, first)
        assert registry.get_alias_version(CHAMPION) == first
        again = client.post("/v1/admin/champion/rollback", json={"reason": "more"})
        assert (
            again.status_code == 409 and "no previous champion" in again.json()["error"]["message"]
        )

        assert client.post("/v1/admin/champion/unpin", json={"reason": "fixed"}).status_code == 200
        twice = client.post("/v1/admin/champion/unpin", json={"reason": "fixed"})
        assert twice.status_code == 409 and "not pinned" in twice.json()["error"]["message"]
        history = client.get("/v1/admin/champion").json()["history"]
    moves = [(m["action"], m["actor"], m["reason"]) for m in history if m["alias"] == CHAMPION]
    assert moves[-3:] == [
        ("pin", actor, "incident 7"),
        ("rollback", actor, "errors up"),
        ("unpin", actor, "fixed"),
    ]
