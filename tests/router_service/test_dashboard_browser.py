"""The dashboard in a real headless chromium, against a uvicorn server seeded by a real run."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from router_service.activity import ActivityLog
from router_service.api.dashboard import page_router, router
from router_service.auth import Principal, get_principal
from router_service.errors import RouterError
from router_service.schemas import Action, OutcomeReport, Rule, StepKind
from tests.browser import ConsoleErrors, chromium, require_browser, serve
from tests.router_service.test_activity import ledger, make_decision, make_task

DOMAINS = ("default", "internal-eng", "customer-finance", "research")
KINDS: tuple[StepKind, ...] = (
    "control",
    "execution",
    "execution",
    "execution",
    "verification",
    "presentation",
)
MODELS = (  # id, dollars for a typical step
    ("gpt-5-nano", 0.0002),
    ("deepseek-chat", 0.0007),
    ("gpt-4.1-mini", 0.0013),
    ("claude-haiku-4-5", 0.0035),
    ("gpt-4.1", 0.0064),
    ("claude-sonnet-4-5", 0.0105),
    ("claude-opus-4-5", 0.0175),
)
PREFERRED = {"control": 4, "execution": 1, "verification": 3, "presentation": 0}


def seeded_activity(seed: int = 11, tasks: int = 12) -> ActivityLog:
    """A deterministic run: tasks over four domains, drawn models, governor rules, outcomes."""
    rng = random.Random(seed)
    activity = ActivityLog()
    at = datetime.now(UTC) - timedelta(minutes=25)
    for t in range(tasks):
        domain = DOMAINS[t % len(DOMAINS)]
        total = rng.choice((0.05, 0.1, 0.25))
        task = make_task(f"task-{t:02d}", domain=domain, total=total, task_type="support")
        spent = 0.0
        epsilon = 0.0 if domain == "customer-finance" else 0.15
        for i in range(rng.randint(8, 16)):
            kind = rng.choice(KINDS)
            scale = rng.uniform(0.5, 3.0)
            costs: dict[str, float | None] = {m: round(c * scale, 6) for m, c in MODELS}
            left = (total - spent) / total
            rules: list[Rule] = []
            action: Action = "proceed"
            top = PREFERRED[kind]
            if left < 0.1:
                rules.append(Rule(rule="hard_cap", action="abort", detail=f"{left:.0%} left"))
                action = "abort"
            elif left < 0.4:
                detail = f"{1 - left:.0%} of the budget spent after {i} steps"
                rules.append(Rule(rule="burn_rate", action="downgrade", detail=detail))
                action, top = "downgrade", 0
            elif rng.random() < 0.15:
                rules.append(Rule(rule="retry_escalation", action="upgrade", detail="2 retries"))
                action, top = "upgrade", min(top + 2, len(MODELS) - 1)
            pmf = {m: epsilon / len(MODELS) for m, _ in MODELS}
            pmf[MODELS[top][0]] += 1 - epsilon
            model = None
            if action == "abort":  # nothing is drawn: the decider reports no probabilities
                pmf = dict.fromkeys(pmf, 0.0)
            else:
                model = rng.choices(list(pmf), weights=list(pmf.values()))[0]
            cost = costs[model] if model else 0.0
            reserved = round((cost or 0.0) * 1.2, 6)
            decision = make_decision(
                f"dec_{t:02d}_{i:02d}_{rng.getrandbits(32):08x}",
                task_id=task.task_id,
                model=model,
                action=action,
                kind=kind,
                pmf=pmf,
                costs=costs,
                rules=tuple(rules),
                spent=spent,
                reserved=reserved,
                total=total,
                at=at,
                domain=domain,
            )
            reasons = [f"{r.action} ({r.rule}): {r.detail}" for r in rules]
            if model:
                reasons.append(f"{model} picked with probability {pmf[model]:.3f}")
            decision = decision.model_copy(update={"reasons": reasons})
            at += timedelta(seconds=9)
            activity.record_decision(decision, task)
            if model is None:
                continue
            spent += reserved * rng.uniform(0.5, 0.9)
            report = OutcomeReport(
                decision_id=decision.decision_id,
                success=rng.random() < 0.55 + 0.06 * [m for m, _ in MODELS].index(model),
                quality=round(rng.uniform(0.3, 1.0), 3),
                input_tokens=2_000,
                output_tokens=300,
                latency_ms=rng.uniform(200, 4_000),
            )
            activity.record_outcome(decision, report, reserved, ledger(spent, 0.0, total))
        if t % 3 == 0:
            activity.record_close(task.model_copy(update={"status": "closed"}), ledger(spent))
    return activity


def dashboard_app(activity: ActivityLog) -> FastAPI:
    """A small app serving only the dashboard, with the state attributes the service has."""
    app = FastAPI()
    app.state.router = SimpleNamespace(
        activity=activity,
        policy=SimpleNamespace(version="prior@seeded"),
        system_status=lambda: {
            "champion_version": "7",
            "challenger_version": "8",
            "learner_lag_seconds": 1.5,
            "lambda_by_domain": {"default": 0.8, "internal-eng": 1.6, "customer-finance": 0.4},
        },
    )
    app.include_router(router)
    app.include_router(page_router)
    app.dependency_overrides[get_principal] = lambda: Principal("admin", frozenset("*"), True)
    app.state.authorization = []

    @app.middleware("http")
    async def remember_authorization(request: Request, call_next: Any) -> Any:
        if request.url.path.startswith("/v1/"):
            app.state.authorization.append(request.headers.get("authorization"))
        return await call_next(request)

    async def router_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RouterError)
        return JSONResponse(exc.to_body(), status_code=exc.status_code)

    app.add_exception_handler(RouterError, router_error)
    return app


@pytest.fixture
def seeded() -> ActivityLog:
    require_browser()
    return seeded_activity()


@pytest.fixture
def app(seeded: ActivityLog) -> FastAPI:
    return dashboard_app(seeded)


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url


def test_dashboard_renders_charts_and_explains_a_decision(
    app: FastAPI, base_url: str, seeded: ActivityLog, tmp_path: Path
) -> None:
    target = next(r for r in seeded.search(limit=1000) if r.rules).load()
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 1100})
        errors = ConsoleErrors(page)
        page.goto(f"{base_url}/dashboard?key=test-key")
        for chart in ("task-spend", "domain-spend", "model-mix", "exploration", "actions"):
            page.wait_for_selector(f'svg[data-chart="{chart}"]', timeout=10_000)
            assert int(page.get_attribute(f'svg[data-chart="{chart}"]', "data-count") or 0) > 0
        assert page.locator('svg[data-chart="model-mix"] rect.bar').count() > 0
        assert int(page.get_attribute('table[data-chart="heatmap"]', "data-count") or 0) > 0
        assert page.locator('svg[data-chart="lambda"] g.row').count() == 3
        assert "prior@seeded" in page.inner_text("#system")
        assert page.evaluate("localStorage.getItem('budgetRouterKey')") == "test-key"
        assert "key=" not in page.url
        assert app.state.authorization
        assert set(app.state.authorization) == {"Bearer test-key"}
        assert page.locator('svg[data-chart="domain-share"] .bar').count() == len(DOMAINS)
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        page.fill("#search", target.decision_id)
        row = page.locator(f'#decisions tbody tr[data-decision-id="{target.decision_id}"]')
        row.wait_for(timeout=5_000)
        page.wait_for_function("document.querySelectorAll('#decisions tbody tr').length === 1")
        row.click()
        page.wait_for_selector(
            '#panel [data-section="alternatives"] svg[data-chart="alternatives"]'
        )
        panel = page.locator("#panel")
        alternatives = panel.locator('[data-section="alternatives-table"] tbody tr')
        assert alternatives.count() == len(target.alternatives)
        for rule in target.rules:
            assert panel.locator(f'[data-section="rules"] li[data-rule="{rule.rule}"]').count() == 1
        assert target.reasons[0] in panel.inner_text()
        assert page.locator('svg[data-chart="budget"] g.row').count() == 2
        page.screenshot(path=str(tmp_path / "explanation.png"), full_page=False)
        page.keyboard.press("Escape")
        assert panel.is_hidden()
    assert errors.messages == []
