"""The activity log's bookkeeping and aggregations, and the dashboard's JSON endpoints."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from router_service.activity import NO_MODEL, ActivityLog, bucket_seconds
from router_service.api.dashboard import page_router, router
from router_service.auth import Principal, get_principal
from router_service.errors import RouterError
from router_service.schemas import (
    Action,
    Alternative,
    Budget,
    Decision,
    LedgerView,
    OutcomeReport,
    Rule,
    Signals,
    Step,
    StepKind,
    Task,
    TrustDomainUsed,
)
from router_service.served import ServedDecision

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def ledger(spent: float = 0.0, reserved: float = 0.0, total: float = 1.0, steps: int = 0):
    return LedgerView(
        spent_dollars=spent,
        reserved_dollars=reserved,
        remaining_dollars=total - spent - reserved,
        input_tokens_used=0,
        output_tokens_used=0,
        retries_used=0,
        steps=steps,
    )


def make_task(
    task_id: str = "t1", domain: str = "default", total: float = 1.0, task_type: str = "qa"
) -> Task:
    return Task(
        task_id=task_id,
        trust_domain=domain,
        task_type=task_type,
        budget=Budget(total_dollars=total, max_input_tokens=100_000, max_output_tokens=10_000),
        planned_steps=None,
        tags={},
        status="open",
        created_at=T0,
    )


def make_decision(
    decision_id: str,
    task_id: str = "t1",
    model: str | None = "small",
    action: Action = "proceed",
    kind: StepKind = "execution",
    pmf: dict[str, float] | None = None,
    costs: dict[str, float | None] | None = None,
    rules: tuple[Rule, ...] = (),
    spent: float = 0.0,
    reserved: float = 0.01,
    total: float = 1.0,
    at: datetime = T0,
    domain: str = "default",
) -> Decision:
    """A schema-valid decision; ``pmf`` maps model ids to probabilities."""
    pmf = pmf if pmf is not None else {"small": 0.9, "large": 0.1}
    costs = costs or {}
    return Decision(
        decision_id=decision_id,
        task_id=task_id,
        model=model,
        propensity=pmf.get(model) if model else None,
        action=action,
        rules=list(rules),
        alternatives=[
            Alternative(model=m, probability=p, estimated_cost_dollars=costs.get(m, 0.01))
            for m, p in pmf.items()
        ],
        reasons=[f"{model} picked"],
        max_output_tokens=500 if model else 0,
        max_input_tokens=2_000 if model else 0,
        reserved_dollars=reserved if model else 0.0,
        policy_version="v1",
        exploration="epsilon-greedy(epsilon=0.1)",
        trust_domain=TrustDomainUsed(name=domain, fallback=False, policy_version="p1"),
        step=Step(kind=kind, type="extraction", input_tokens=2_000, expected_output_tokens=300),
        signals=Signals(),
        budget=Budget(total_dollars=total, max_input_tokens=100_000, max_output_tokens=10_000),
        ledger_before=ledger(spent, 0.0, total),
        ledger=ledger(spent, reserved if model else 0.0, total, steps=1),
        created_at=at,
    )


def outcome(decision_id: str, success: bool = True, quality: float = 1.0) -> OutcomeReport:
    return OutcomeReport(
        decision_id=decision_id,
        success=success,
        quality=quality,
        input_tokens=2_000,
        output_tokens=300,
        latency_ms=120.0,
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_decisions": 0}, "max_decisions must be at least 1"), ({"max_tasks": 0}, "max_tasks")],
)
def test_bad_sizes_are_refused(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ActivityLog(**kwargs)


def test_ring_buffer_keeps_the_most_recent_decisions() -> None:
    log = ActivityLog(max_decisions=3)
    task = make_task()
    for i in range(5):
        log.record_decision(make_decision(f"d{i}"), task)
    assert log.get("d0") is None and log.get("d1") is None
    assert [r.decision_id for r in log.search()] == ["d4", "d3", "d2"]
    assert log.summary()["totals"]["decisions"] == 3
    assert log.summary()["tasks"][0]["decisions"] == 5


def test_a_logged_decision_round_trips_exactly() -> None:
    log = ActivityLog()
    rule = Rule(rule="burn_rate", action="downgrade", detail="spent 70%")
    decision = make_decision("d1", action="downgrade", rules=(rule,), at=T0)
    log.record_decision(decision, make_task())
    record = log.get("d1")
    assert record is not None
    assert record.load() == decision
    assert record.decision_json() == decision.model_dump(mode="json")
    assert record.rules == ("burn_rate",)


def test_search_matches_id_task_model_action_and_domain_case_insensitively() -> None:
    log = ActivityLog()
    log.record_decision(make_decision("dec_a", task_id="alpha", model="small"), make_task("alpha"))
    log.record_decision(
        make_decision("dec_b", task_id="beta", model="large", action="upgrade"),
        make_task("beta", domain="customer-finance"),
    )
    log.record_decision(
        make_decision("dec_c", task_id="beta", model=None, action="abort"), make_task("beta")
    )

    def ids(q: str, limit: int = 50) -> list[str]:
        return [r.decision_id for r in log.search(q, limit)]

    assert ids("") == ["dec_c", "dec_b", "dec_a"]
    assert ids("DEC_B") == ["dec_b"]
    assert ids("alph") == ["dec_a"]
    assert ids("large") == ["dec_b"]
    assert ids("upgrade") == ["dec_b"]
    assert ids("finance") == ["dec_b"]
    assert ids("no model") == ["dec_c"]
    assert ids("beta", limit=1) == ["dec_c"]
    assert ids("nothing-like-this") == []


def test_task_books_follow_decisions_outcomes_and_close() -> None:
    log = ActivityLog()
    task = make_task(total=2.0)
    first = make_decision("d1", spent=0.0, reserved=0.3, total=2.0)
    log.record_decision(first, task)
    books = log.summary()["tasks"][0]
    assert (books["spent_dollars"], books["reserved_dollars"], books["total_dollars"]) == (
        0.0,
        0.3,
        2.0,
    )
    log.record_outcome(first, outcome("d1"), 0.25)
    log.record_outcome(first, outcome("d1"), 0.25)  # a repeat books nothing twice
    books = log.summary()["tasks"][0]
    assert books["spent_dollars"] == pytest.approx(0.25)
    assert books["reserved_dollars"] == 0.0
    assert log.summary()["totals"]["outcomes"] == 1

    second = make_decision("d2", spent=0.25, reserved=0.4, total=2.0)
    log.record_decision(second, task)
    log.record_outcome(second, outcome("d2"), 0.5, ledger(0.7, 0.0, 2.0))
    assert log.summary()["tasks"][0]["spent_dollars"] == 0.7
    log.record_close(task.model_copy(update={"status": "closed"}), ledger(0.75, 0.0, 2.0))
    books = log.summary()["tasks"][0]
    assert (books["status"], books["spent_dollars"], books["decisions"]) == ("closed", 0.75, 2)


def test_outcome_for_an_unknown_decision_is_counted_but_books_nothing() -> None:
    log = ActivityLog()
    log.record_outcome(make_decision("gone"), outcome("gone"), 0.1)
    summary = log.summary()
    assert summary["totals"]["outcomes"] == 1
    assert summary["tasks"] == []


def test_tasks_are_bounded_and_listed_most_recent_first() -> None:
    log = ActivityLog(max_tasks=2)
    for name in ("a", "b", "c"):
        log.record_decision(make_decision(f"d-{name}", task_id=name), make_task(name))
    log.record_decision(make_decision("d-b2", task_id="b"), make_task("b"))
    assert [t["task_id"] for t in log.summary()["tasks"]] == ["b", "c"]
    assert [t["task_id"] for t in log.summary(recent_tasks=1)["tasks"]] == ["b"]


def test_spend_per_trust_domain_sums_tasks() -> None:
    log = ActivityLog()
    specs = [("a", "eng", 1.0, 0.2), ("b", "eng", 2.0, 0.5), ("c", "fin", 1.0, 0.1)]
    for task_id, domain, total, spent in specs:
        decision = make_decision(f"d-{task_id}", task_id=task_id, spent=spent, total=total)
        log.record_decision(decision, make_task(task_id, domain=domain, total=total))
    log.record_close(make_task("c", domain="fin"), ledger(0.1, 0.0))
    domains = log.summary()["domains"]
    assert [d["trust_domain"] for d in domains] == ["eng", "fin"]
    eng = domains[0]
    assert eng["spent_dollars"] == pytest.approx(0.7)
    assert eng["reserved_dollars"] == pytest.approx(0.02)
    assert (eng["total_dollars"], eng["tasks"], eng["open_tasks"]) == (3.0, 2, 2)
    assert (domains[1]["tasks"], domains[1]["open_tasks"]) == (1, 0)


def test_success_and_reward_by_model_and_step_kind() -> None:
    log = ActivityLog()
    task = make_task()
    runs = [
        ("d1", "small", "execution", True, 0.8, 0.1),
        ("d2", "small", "execution", False, 0.2, 0.3),
        ("d3", "small", "verification", True, 1.0, 0.2),
        ("d4", "large", "execution", True, 0.9, 1.0),
    ]
    for decision_id, model, kind, success, quality, cost in runs:
        decision = make_decision(decision_id, model=model, kind=kind)
        log.record_decision(decision, task)
        log.record_outcome(decision, outcome(decision_id, success, quality), cost)
    log.record_decision(make_decision("pending"), task)

    perf = log.summary(lam=0.5)["performance"]
    assert perf["lambda"] == 0.5
    cells = {(c["model"], c["step_kind"]): c for c in perf["cells"]}
    small_exec = cells[("small", "execution")]
    assert small_exec["n"] == 2
    assert small_exec["success_rate"] == 0.5
    assert small_exec["mean_quality"] == pytest.approx(0.5)
    assert small_exec["mean_cost_dollars"] == pytest.approx(0.2)
    assert small_exec["mean_reward"] == pytest.approx(0.5 - 0.5 * 0.2)
    by_model = {m["model"]: m for m in perf["by_model"]}
    assert by_model["small"]["n"] == 3
    assert by_model["small"]["success_rate"] == pytest.approx(2 / 3)
    assert by_model["large"]["mean_reward"] == pytest.approx(0.9 - 0.5)
    by_kind = {k["step_kind"]: k for k in perf["by_kind"]}
    assert by_kind["execution"]["n"] == 3
    assert log.summary()["performance"]["by_model"][0]["mean_reward"] == pytest.approx(0.9)


def test_exploration_counts_draws_off_the_top_choice() -> None:
    log = ActivityLog()
    pmf = {"small": 0.8, "large": 0.15, "tiny": 0.05}
    picks = [("d1", "small", "eng"), ("d2", "small", "eng"), ("d3", "large", "eng")]
    picks += [("d4", "tiny", "fin")]
    for decision_id, model, domain in picks:
        log.record_decision(
            make_decision(decision_id, model=model, pmf=pmf), make_task(domain=domain)
        )
    log.record_decision(make_decision("d5", model=None, action="abort"), make_task())
    ex = log.summary()["exploration"]
    assert (ex["draws"], ex["explored"], ex["rate"]) == (4, 2, 0.5)
    assert ex["mean_one_minus_propensity"] == pytest.approx((0.2 + 0.2 + 0.85 + 0.95) / 4)
    by_domain = {d["trust_domain"]: d for d in ex["by_domain"]}
    assert by_domain["eng"]["rate"] == pytest.approx(1 / 3)
    assert by_domain["fin"]["explored"] == 1


def test_a_tie_at_the_top_is_not_exploration() -> None:
    tied = make_decision("d", model="large", pmf={"small": 0.5, "large": 0.5})
    assert ServedDecision.of(tied).explored is False
    assert ServedDecision.of(make_decision("d", model=None, action="abort")).explored is None


def test_actions_are_counted_most_common_first() -> None:
    log = ActivityLog()
    actions: list[Action] = ["proceed", "downgrade", "proceed", "abort"]
    for i, action in enumerate(actions):
        model = None if action == "abort" else "small"
        log.record_decision(make_decision(f"d{i}", model=model, action=action), make_task())
    assert log.summary()["actions"] == {"proceed": 2, "downgrade": 1, "abort": 1}


@pytest.mark.parametrize(
    ("span", "width"), [(0, 1), (30, 1), (31, 5), (1_800, 60), (1_801, 300), (10**7, 86_400)]
)
def test_bucket_width_is_the_smallest_round_step_that_fits(span: float, width: int) -> None:
    assert bucket_seconds(span, max_buckets=30) == width


def test_model_mix_counts_models_per_time_bucket() -> None:
    log = ActivityLog()
    task = make_task()
    picks = [(0, "small"), (10, "small"), (70, "large"), (130, None), (175, "small")]
    for i, (offset, model) in enumerate(picks):
        decision = make_decision(
            f"d{i}",
            model=model,
            action="proceed" if model else "abort",
            at=T0 + timedelta(0, offset),
        )
        log.record_decision(decision, task)
    mix = log.summary(now=T0 + timedelta(seconds=179))["model_mix"]
    assert mix["bucket_seconds"] == 10
    assert mix["models"] == ["small", NO_MODEL, "large"]
    counts = {b["start"]: b["counts"] for b in mix["buckets"]}
    assert len(mix["buckets"]) == 18
    assert counts[T0.isoformat()] == {"small": 1}
    assert counts[(T0 + timedelta(seconds=70)).isoformat()] == {"large": 1}
    assert counts[(T0 + timedelta(seconds=130)).isoformat()] == {NO_MODEL: 1}
    assert sum(sum(b["counts"].values()) for b in mix["buckets"]) == 5


def test_model_mix_of_an_empty_log_has_no_buckets() -> None:
    assert ActivityLog().summary()["model_mix"]["buckets"] == []


def test_concurrent_recording_keeps_the_books_consistent() -> None:
    log = ActivityLog(max_decisions=1_000)

    def worker(w: int) -> None:
        task = make_task(f"task-{w}")
        for i in range(300):
            decision = make_decision(
                f"d-{w}-{i}", task_id=task.task_id, spent=i * 0.001, reserved=0.001
            )
            log.record_decision(decision, task)
            log.record_outcome(decision, outcome(decision.decision_id), 0.001)
            if i % 50 == 0:
                log.summary()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = log.summary()
    assert summary["totals"] == {
        "decisions": 1_000,
        "outcomes": 1_800,
        "tasks": 6,
        "max_decisions": 1_000,
    }
    assert all(t["decisions"] == 300 for t in summary["tasks"])
    assert all(t["spent_dollars"] == pytest.approx(0.3) for t in summary["tasks"])
    assert all(t["reserved_dollars"] == pytest.approx(0.0, abs=1e-12) for t in summary["tasks"])


# ---- the JSON endpoints of router_service.api.dashboard ----


def dashboard_client(state: Any) -> TestClient:
    """The dashboard routes alone, called as an admin (who sees every tenant's activity)."""
    app = FastAPI()
    app.state.router = state
    app.dependency_overrides[get_principal] = lambda: Principal("admin", frozenset("*"), True)
    app.include_router(router)
    app.include_router(page_router)

    async def router_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RouterError)
        return JSONResponse(exc.to_body(), status_code=exc.status_code)

    app.add_exception_handler(RouterError, router_error)
    return TestClient(app)


@pytest.fixture
def activity() -> ActivityLog:
    log = ActivityLog()
    first = make_decision("dec_1", rules=(Rule(rule="burn_rate", action="downgrade", detail="x"),))
    log.record_decision(first, make_task())
    log.record_outcome(first, outcome("dec_1"), 0.02)
    log.record_decision(make_decision("dec_2", model="large"), make_task())
    return log


def test_summary_merges_the_system_block(activity: ActivityLog) -> None:
    state = SimpleNamespace(
        activity=activity,
        policy=SimpleNamespace(version="v9"),
        system_status=lambda: {"champion_version": "3", "learner_lag_seconds": 2.0},
    )
    body = dashboard_client(state).get("/v1/dashboard/summary", params={"lam": 1}).json()
    assert body["system"] == {
        "policy_version": "v9",
        "champion_version": "3",
        "learner_lag_seconds": 2.0,
    }
    assert body["performance"]["lambda"] == 1.0
    assert body["totals"]["decisions"] == 2


def test_summary_survives_a_missing_or_failing_system_status(activity: ActivityLog) -> None:
    bare = dashboard_client(SimpleNamespace(activity=activity))
    assert bare.get("/v1/dashboard/summary").json()["system"] == {"policy_version": None}

    def broken() -> dict[str, Any]:
        raise RuntimeError("mlflow down")

    failing = dashboard_client(SimpleNamespace(activity=activity, system_status=broken))
    system = failing.get("/v1/dashboard/summary").json()["system"]
    assert system["error"] == "system_status() failed: RuntimeError: mlflow down"


def test_without_an_activity_log_the_endpoints_say_what_is_missing() -> None:
    response = dashboard_client(SimpleNamespace()).get("/v1/dashboard/summary")
    assert response.status_code == 503
    assert "app.state.router.activity" in response.json()["error"]["message"]


def test_decisions_search_and_explanation(activity: ActivityLog) -> None:
    client = dashboard_client(SimpleNamespace(activity=activity))
    rows = client.get("/v1/dashboard/decisions", params={"q": "large"}).json()
    assert [r["decision_id"] for r in rows] == ["dec_2"]
    assert rows[0]["outcome"] is None
    rows = client.get("/v1/dashboard/decisions", params={"limit": 1}).json()
    assert [r["decision_id"] for r in rows] == ["dec_2"]
    detail = client.get("/v1/dashboard/decisions/dec_1").json()
    assert detail["decision"]["rules"][0]["rule"] == "burn_rate"
    assert [a["model"] for a in detail["decision"]["alternatives"]] == ["small", "large"]
    assert detail["outcome"]["cost_dollars"] == 0.02
    assert detail["explored"] is False
    missing = client.get("/v1/dashboard/decisions/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["field"] == "decision_id"


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"q": "x" * 201}, "q")],
)
def test_bad_query_parameters_are_refused(
    activity: ActivityLog, params: dict[str, Any], field: str
) -> None:
    response = dashboard_client(SimpleNamespace(activity=activity)).get(
        "/v1/dashboard/decisions", params=params
    )
    assert response.status_code == 422
    assert field in response.text


def test_page_and_assets_are_served() -> None:
    client = dashboard_client(SimpleNamespace())
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "dashboard/dashboard.js" in page.text
    assert (
        client.get("/dashboard/dashboard.js").headers["content-type"].startswith("text/javascript")
    )
    assert client.get("/dashboard/dashboard.css").status_code == 200
    unknown = client.get("/dashboard/secrets.txt")
    assert unknown.status_code == 404
    assert "dashboard.js" in unknown.json()["error"]["message"]
