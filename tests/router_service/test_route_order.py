"""The per-step endpoints are the first routes tried: a decision is not matched against the rest."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import Match

from router_service.app import create_app
from router_service.settings import Settings


def test_decide_and_outcomes_match_before_any_other_api_route(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    tried = []
    for path in ("/v1/decide", "/v1/outcomes"):
        scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": []}
        api = [
            r
            for r in app.router.routes
            if not getattr(r, "path", "/v1").startswith(("/docs", "/redoc", "/openapi"))
        ]
        tried.append(next(i for i, r in enumerate(api) if r.matches(scope)[0] == Match.FULL))
    assert tried == [0, 1]
