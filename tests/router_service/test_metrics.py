"""Prometheus metrics on a per-app registry and the JSON log formatter."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from router_service.metrics import (
    JsonLogFormatter,
    RouterMetrics,
    configure_json_logging,
    metrics_router,
)
from router_service.schemas import Decision, Rule, Step, TrustDomainUsed
from router_service.served import ServedDecision
from tests.conftest import budget, step


def decision(model: str | None, action: str, rules: list[Rule] | None = None) -> ServedDecision:
    return ServedDecision.of(
        Decision.model_construct(
            decision_id="d",
            task_id="t",
            model=model,
            action=action,
            propensity=None,
            alternatives=[],
            rules=rules or [],
            trust_domain=TrustDomainUsed(name="eng", fallback=False, policy_version="v1"),
            step=Step(kind="control", type="planning", input_tokens=1, expected_output_tokens=1),
            max_output_tokens=0,
            reserved_dollars=0.0,
            created_at=datetime.now(UTC),
            ledger=None,
        )
    )


def samples(metrics: RouterMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered text, keyed by name and sorted labels."""
    body, _ = metrics.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_decisions_and_latency_move_on_observe() -> None:
    metrics = RouterMetrics()
    metrics.observe(decision("gpt-5-nano", "proceed"), 0.0004)
    metrics.observe(decision("gpt-5-nano", "proceed"), 0.002)
    metrics.observe(decision(None, "skip_optional"), 0.0001)
    got = samples(metrics)
    labels = (("action", "proceed"), ("model", "gpt-5-nano"), ("trust_domain", "eng"))
    assert got[("budget_router_decisions_total", labels)] == 2
    none = (("action", "skip_optional"), ("model", "none"), ("trust_domain", "eng"))
    assert got[("budget_router_decisions_total", none)] == 1
    assert got[("budget_router_decision_latency_seconds_count", ())] == 3
    assert got[("budget_router_decision_latency_seconds_bucket", (("le", "0.0005"),))] == 2
    assert got[("budget_router_decision_latency_seconds_sum", ())] == pytest.approx(0.0025)


def test_abort_is_counted_by_the_rule_that_fired() -> None:
    metrics = RouterMetrics()
    rules = [
        Rule(rule="reserve", action="downgrade", detail="keep the reserve"),
        Rule(rule="retry_cap", action="abort", detail="3 retries used"),
    ]
    metrics.observe(decision(None, "abort", rules), 0.001)
    labels = (("rule", "retry_cap"), ("trust_domain", "eng"))
    assert samples(metrics)[("budget_router_aborts_total", labels)] == 1


def test_outcomes_add_spend_per_domain() -> None:
    metrics = RouterMetrics()
    metrics.observe_outcome(model="m1", trust_domain="eng", success=True, cost_dollars=0.25)
    metrics.observe_outcome(model="m1", trust_domain="eng", success=False, cost_dollars=0.5)
    got = samples(metrics)
    assert got[("budget_router_spend_dollars_total", (("trust_domain", "eng"),))] == 0.75
    ok = (("model", "m1"), ("success", "true"))
    assert got[("budget_router_outcomes_total", ok)] == 1


def test_spool_model_version_and_staleness() -> None:
    metrics = RouterMetrics()
    metrics.set_spool_depth(7)
    metrics.set_model("vw@12", stale=True, age_seconds=600)
    got = samples(metrics)
    assert got[("budget_router_spool_depth", ())] == 7
    assert got[("budget_router_model_info", (("version", "vw@12"),))] == 1
    assert got[("budget_router_policy_stale", ())] == 1
    assert 600 <= got[("budget_router_policy_age_seconds", ())] < 660
    metrics.track_spool_depth(lambda: 3)
    metrics.set_model("vw@13", stale=False, age_seconds=0)
    got = samples(metrics)
    assert got[("budget_router_spool_depth", ())] == 3
    assert got[("budget_router_policy_stale", ())] == 0
    assert ("budget_router_model_info", (("version", "vw@12"),)) not in got
    assert got[("budget_router_policy_age_seconds", ())] < 60


def test_each_instance_has_its_own_registry() -> None:
    first, second = RouterMetrics(), RouterMetrics()
    first.set_spool_depth(5)
    assert samples(second)[("budget_router_spool_depth", ())] == 0


@pytest.fixture
def metrics_app() -> Iterator[tuple[TestClient, RouterMetrics]]:
    app = FastAPI()
    metrics = RouterMetrics()
    app.state.router = SimpleNamespace(metrics=metrics)
    app.include_router(metrics_router)
    with TestClient(app) as http:
        yield http, metrics


def test_metrics_route_serves_parseable_text(
    metrics_app: tuple[TestClient, RouterMetrics], client: TestClient
) -> None:
    http, metrics = metrics_app
    client.post("/v1/tasks", json={"task_id": "t-m", "task_type": "r", "budget": budget()})
    real = client.post("/v1/decide", json={"task_id": "t-m", "step": step()})
    metrics.observe(ServedDecision.of(Decision.model_validate(real.json())), 0.003)
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {"budget_router_decisions", "budget_router_decision_latency_seconds"} <= set(families)
    (sample,) = [s for s in families["budget_router_decisions"].samples if s.value == 1]
    assert sample.labels["model"] == real.json()["model"]


def test_log_record_with_extra_becomes_one_json_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    log = logging.getLogger("budget_router.test_metrics")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("decision %s", "made", extra={"decision_id": "d-1", "propensity": 0.25})
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["message"] == "decision made"
    assert (entry["level"], entry["logger"]) == ("WARNING", "budget_router.test_metrics")
    assert (entry["decision_id"], entry["propensity"]) == ("d-1", 0.25)
    assert entry["time"].endswith("+00:00")
    assert "args" not in entry and "msg" not in entry


def test_exceptions_are_kept_in_the_json_line() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonLogFormatter().format(record))
    assert "ValueError: boom" in entry["exception"]


def test_configure_json_logging_replaces_its_own_handler() -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_json_logging("INFO", stream=first)
        configure_json_logging(logging.INFO, stream=second)
        logging.getLogger("budget_router.x").info("hello", extra={"task_id": "t-1"})
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        root.setLevel(level)
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["task_id"] == "t-1"


def test_background_json_logging_writes_every_line_by_stop() -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        listener = configure_json_logging(logging.INFO, stream=out, background=True)
        assert listener is not None
        for n in range(50):
            logging.getLogger("budget_router.x").info("decision", extra={"decision_id": f"d{n}"})
        listener.stop()
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["decision_id"] for line in lines] == [f"d{n}" for n in range(50)]
