"""The service-performance benchmark end to end in quick mode, and its bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.service_perf
from bench.service_perf import STEPS_PER_TASK, _extrapolate, event_stream, main, targets
from router_service.cpu_latency import hold_cpu_latency
from router_service.events import DecisionEvent, TaskClosedEvent, decode_event

SECTIONS = (
    "## Targets",
    "## 1. Decision latency and throughput over HTTP, full stack on",
    "## 2. Learner throughput",
    "## 3. Outcome-to-policy delay",
    "## 4. Memory",
    "- Command: `",
    "- Seed: ",
)


def test_quick_run_measures_every_part_without_errors(tmp_path: Path) -> None:
    document = main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "service_perf.md").read_text()
    for section in SECTIONS:
        assert section in text
    assert "Quick mode" in text
    assert "- CPU idle states: the machine's own (no PM QoS request held)" in text
    saved = json.loads((tmp_path / "service_perf.json").read_text())
    assert saved["meta"]["quick"] and saved["targets"] == document["targets"]
    results = document["results"]
    assert results["http"]["stack"] == "budget-router up"
    for server in (
        "router",
        "router_alone",
        "router_postgres",
        "router_postgres_replicas",
        "baseline",
    ):
        for phase in ("light", "peak"):
            assert results["http"][server][phase]["errors"] == 0
            assert results["http"][server][phase]["count"] > 0
    assert "| 2 routers (up + serve), one PostgreSQL ledger |" in text
    assert "| budget-router serve + broker, no learner |" in text
    learner = results["learner"]
    assert learner["learner"]["learned_steps"] == learner["decisions"]
    assert learner["learner"]["dead_lettered"] == 0
    assert results["policy_delay"]["repeats"] == 2
    memory = results["memory"]
    for kind in ("router", "learner"):
        assert memory[kind]["points"][0]["at"] == 0 and len(memory[kind]["points"]) >= 2
        assert all(row["rss_kb"] > 0 for row in memory[kind]["points"])
        assert memory["bare"][kind]["rss_kb"] > 0


def test_event_stream_is_seeded_whole_tasks_of_decisions_outcomes_and_a_close() -> None:
    first = list(event_stream(2 * (2 * STEPS_PER_TASK + 1), seed=3))
    assert first == list(event_stream(2 * (2 * STEPS_PER_TASK + 1), seed=3))
    events = [decode_event(value) for _, value in first]
    decisions = [e for e in events if isinstance(e, DecisionEvent)]
    closes = [e for e in events if isinstance(e, TaskClosedEvent)]
    assert len(decisions) == 2 * STEPS_PER_TASK and len(closes) == 2
    for decision in decisions:
        assert abs(sum(decision.pmf) - 1) < 1e-9
        assert decision.propensity == decision.pmf[decision.chosen_index]
        assert len(decision.action_features) == len(decision.actions)
    assert closes[0].decision_ids == [d.decision_id for d in decisions[:STEPS_PER_TASK]]


def test_targets_report_miss_factors_memory_growth_and_extrapolation() -> None:
    router_points = [
        {"at": 0, "rss_kb": 50_000},
        {"at": 100_000, "rss_kb": 90_000},
        {"at": 1_000_000, "rss_kb": 90_000 + 100 * 1024},
    ]
    results = {
        "http": {"router": {"light": {"p99_ms": 4.0}}, "throughput_ratio": 0.25},
        "learner": {"learner": {"events_per_s_steady": 20_000.0}},
        "policy_delay": {"median_s": 2.0, "max_s": 10.0},
        "memory": {"router": {"points": router_points}, "learner": {"points": router_points[:1]}},
    }
    verdicts = {t["target"]: t for t in targets(results)}
    assert verdicts["decision p99 at 200/s (ms)"]["miss_factor"] == 2.0
    assert verdicts["peak throughput / baseline"]["miss_factor"] == 2.0
    assert verdicts["learner events/s (steady)"]["met"]
    assert verdicts["outcome-to-policy max (s)"]["miss_factor"] == 2.0
    assert verdicts["router RSS growth from 100k (MB)"]["miss_factor"] == 2.0
    assert "learner RSS growth from 100k (MB)" not in verdicts  # never reached 100k
    rows = [{"at": 0, "rss_kb": 100}, {"at": 1_000, "rss_kb": 200}, {"at": 2_000, "rss_kb": 300}]
    assert _extrapolate(rows) == 100_100
    assert _extrapolate(rows[:1]) is None


def test_cpu_latency_flag_that_cannot_be_held_stops_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-dir" / "cpu_dma_latency"
    monkeypatch.setattr(
        bench.service_perf, "hold_cpu_latency", lambda max_us: hold_cpu_latency(max_us, missing)
    )
    with pytest.raises(SystemExit) as stopped:
        main(["--quick", "--cpu-latency-us", "0", "--out", str(tmp_path)])
    assert stopped.value.code == 2
    assert "--cpu-latency-us: [Errno 2]" in capsys.readouterr().err
    assert not (tmp_path / "service_perf.json").exists()


@pytest.mark.parametrize("priority", ["0", "100"])
def test_realtime_priority_outside_1_to_99_stops_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], priority: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--quick", "--realtime-priority", priority, "--out", str(tmp_path)])
    assert stopped.value.code == 2
    assert f"--realtime-priority: {priority} is outside 1-99" in capsys.readouterr().err
    assert not (tmp_path / "service_perf.json").exists()
