"""Decision latency and throughput over HTTP, beside a minimal FastAPI endpoint as baseline.

``python -m bench.decision_latency --out docs/benchmarks/decision_latency.md [--quick]``
starts the router (``budget-router serve``) and the baseline app as real one-worker uvicorn
processes on loopback, drives each at light load (open loop) and at maximum throughput
(closed loop), and writes the numbers, the machine and the verdict on the targets.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import BenchError, code_version, machine_facts, server_process
from bench.http_load import (
    LoadResult,
    closed_loop,
    markdown_table,
    open_loop,
    post_json,
    run,
    send_each,
)
from router_service.embedded_broker import free_port

KIND_TYPES: dict[str, tuple[str, ...]] = {
    "control": ("planning", "decomposition", "delegation", "branching"),
    "execution": ("extraction", "transformation", "drafting", "classification", "tool_selection"),
    "verification": ("self_check", "policy_check", "tool_argument_validation"),
    "presentation": ("summarize", "format", "translate"),
}
MIDDLE_KINDS = ("execution", "execution", "execution", "verification", "control", "presentation")
TASK_TYPES = ("research", "coding", "support", "data_extraction", "report")
TRUST_DOMAINS = ("eng", "finance", "support", "legal")


@dataclass(frozen=True)
class BenchConfig:
    """How long and how hard each phase runs."""

    light_rate: float = 200.0
    light_s: float = 15.0
    light_connections: int = 8
    peak_connections: int = 16
    peak_s: float = 10.0
    warmup_s: float = 2.0
    decisions_per_task: int = 50
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_run(cls) -> BenchConfig:
        """A smoke run of a few seconds: proves the harness works, measures nothing useful."""
        return cls(light_s=1.0, peak_s=1.0, warmup_s=0.3, decisions_per_task=20, quick=True)


@dataclass(frozen=True)
class ServerRun:
    """One server's light-load and peak measurements."""

    name: str
    endpoint: str
    light: LoadResult
    peak: LoadResult
    tasks_opened: int = 0


def task_body(task_id: str, rng: random.Random) -> bytes:
    """A task whose budget is large enough that no decision is refused for money or tokens."""
    return json.dumps(
        {
            "task_id": task_id,
            "trust_domain": rng.choice(TRUST_DOMAINS),
            "task_type": rng.choice(TASK_TYPES),
            "budget": {
                "total_dollars": 1e6,
                "max_input_tokens": 1_000_000_000,
                "max_output_tokens": 1_000_000_000,
                "reserve_for_final_synthesis": 1.0,
                "reserve_for_human_handoff": 0.5,
                "hard_stop_after_retries": 10,
            },
        }
    ).encode()


def task_steps(task_id: str, steps: int, rng: random.Random) -> list[bytes]:
    """A task's decide bodies: plan first, a seeded mix of work, a final synthesis last."""
    bodies = []
    context = rng.randint(800, 4_000)
    for index in range(steps):
        if index == 0:
            kind = "control"
        elif index == steps - 1:
            kind = "final_synthesis"
        else:
            kind = rng.choice(MIDDLE_KINDS)
        step_type = "synthesis" if kind == "final_synthesis" else rng.choice(KIND_TYPES[kind])
        context = min(context + rng.randint(100, 1_500), 100_000)
        retries = rng.choice((0, 0, 0, 0, 0, 0, 1, 1, 2))
        body: dict[str, object] = {
            "task_id": task_id,
            "step": {
                "kind": kind,
                "type": step_type,
                "input_tokens": context,
                "expected_output_tokens": rng.randint(50, 2_000),
                "optional": kind == "presentation" and rng.random() < 0.3,
            },
            "signals": {
                "retries": retries,
                "prior_confidence": round(rng.random(), 3),
                "malformed_tool_args": rng.choice((0, 0, 0, 1)) if kind == "execution" else 0,
                "loop_detected": rng.random() < 0.02,
                "self_corrections": rng.choice((0, 0, 1)),
                "context_pressure": round(context / 131_072, 3),
            },
        }
        if rng.random() < 0.3:
            body["context"] = {"repo": "monorepo", "priority": round(rng.random(), 2)}
        bodies.append(json.dumps(body).encode())
    return bodies


def decision_workload(
    phase: str, tasks: int, per_task: int, rng: random.Random, interleave: int
) -> tuple[list[bytes], list[bytes]]:
    """Task-opening bodies and decide requests; ``interleave`` tasks advance step by step together.

    Interleaving means concurrent requests are mostly for different tasks, as with many agents.
    """
    ids = [f"bench-{phase}-{n}" for n in range(tasks)]
    opens = [task_body(task_id, rng) for task_id in ids]
    decides: list[bytes] = []
    for first in range(0, tasks, interleave):
        group = [task_steps(task_id, per_task, rng) for task_id in ids[first : first + interleave]]
        for step in range(per_task):
            decides.extend(post_json("/v1/decide", steps[step]) for steps in group)
    return opens, decides


def echo_workload(count: int, rng: random.Random) -> list[bytes]:
    """Varied small bodies for the baseline endpoint."""
    kinds = (*KIND_TYPES, "final_synthesis")
    return [
        post_json(
            "/v1/echo",
            json.dumps(
                {
                    "task_id": f"bench-{n}",
                    "kind": rng.choice(kinds),
                    "input_tokens": rng.randint(800, 100_000),
                }
            ).encode(),
        )
        for n in range(count)
    ]


async def measure_router(port: int | Sequence[int], config: BenchConfig) -> ServerRun:
    """Warm up, then light load, then peak, each phase on its own fresh tasks.

    With several ports (router replicas on one shared ledger), tasks are opened through the
    first and the load's connections are spread over all of them.
    """
    first = port if isinstance(port, int) else port[0]
    rng = random.Random(config.seed)
    per_task, width = config.decisions_per_task, config.peak_connections
    opened = 0

    async def phase(name: str, tasks: int) -> list[bytes]:
        nonlocal opened
        opens, decides = decision_workload(name, tasks, per_task, rng, width)
        statuses = await send_each("127.0.0.1", first, [post_json("/v1/tasks", b) for b in opens])
        if refused := [s for s in statuses if not 200 <= s < 300]:
            raise BenchError(f"POST /v1/tasks answered {refused[0]}; expected 201 for every task")
        opened += tasks
        return decides

    warm = await closed_loop(
        "127.0.0.1",
        port,
        await phase("warmup", 2 * width),
        concurrency=width,
        duration_s=config.warmup_s,
    )
    light_tasks = math.ceil(config.light_rate * config.light_s / per_task) + 1
    light = await open_loop(
        "127.0.0.1",
        port,
        await phase("light", light_tasks),
        rate=config.light_rate,
        duration_s=config.light_s,
        connections=config.light_connections,
        label=f"open loop {config.light_rate:g}/s, {config.light_s:g} s",
    )
    # Size the peak phase from the warm-up rate so each task sees about per_task decisions.
    peak_tasks = math.ceil(1.5 * warm.requests_per_s * config.peak_s / per_task) + width
    peak = await closed_loop(
        "127.0.0.1",
        port,
        await phase("peak", peak_tasks),
        concurrency=width,
        duration_s=config.peak_s,
        label=f"closed loop {width} connections, {config.peak_s:g} s",
    )
    return ServerRun("budget-router", "POST /v1/decide", light, peak, opened)


async def measure_baseline(port: int, config: BenchConfig) -> ServerRun:
    """The same phases against the baseline app."""
    requests = echo_workload(4_096, random.Random(config.seed))
    await closed_loop(
        "127.0.0.1", port, requests, concurrency=config.peak_connections, duration_s=config.warmup_s
    )
    light = await open_loop(
        "127.0.0.1",
        port,
        requests,
        rate=config.light_rate,
        duration_s=config.light_s,
        connections=config.light_connections,
        label=f"open loop {config.light_rate:g}/s, {config.light_s:g} s",
    )
    peak = await closed_loop(
        "127.0.0.1",
        port,
        requests,
        concurrency=config.peak_connections,
        duration_s=config.peak_s,
        label=f"closed loop {config.peak_connections} connections, {config.peak_s:g} s",
    )
    return ServerRun("baseline FastAPI", "POST /v1/echo", light, peak)


def router_command(port: int, data_dir: Path) -> list[str]:
    """``budget-router serve`` from this interpreter's environment."""
    script = Path(sys.executable).parent / "budget-router"
    if not script.is_file():
        raise BenchError(f"console script {script} not found; expected `pip install -e .` first")
    return [str(script), "serve", "--port", str(port), "--data-dir", str(data_dir)]


def baseline_command(port: int) -> list[str]:
    """The baseline app under the same uvicorn defaults (uvloop, httptools, no access log)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baseline_app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]


def run_benchmark(config: BenchConfig, work_dir: Path) -> list[ServerRun]:
    """Measure the router, then the baseline, one server process at a time."""
    port = free_port()
    with server_process(
        router_command(port, work_dir / "router-data"), port, work_dir / "router.log"
    ):
        router = run(measure_router(port, config))
    port = free_port()
    with server_process(baseline_command(port), port, work_dir / "baseline.log"):
        baseline = run(measure_baseline(port, config))
    return [router, baseline]


P99_TARGET_MS = 5.0
THROUGHPUT_TARGET_RATIO = 0.5
QUICK_NOTE = "\n**Quick mode: a smoke run of the harness; these numbers are not a measurement.**\n"
REPORT = """# Decision latency and throughput over HTTP
{quick_note}
- Command: `{command}`
- Code: {code}
- Date: {date}

## Machine

- CPU: {cpu}, {cores} cores
- Python: {python} on {os}
- Stack: {stack}
- The load generator and the server under test share these cores; nothing is pinned.
- Load average (1 min) when the run started: {load}; other processes were not stopped.

## Setup

- Each server is a real one-worker uvicorn process on a free loopback port, uvicorn's defaults
  (uvloop, httptools), access log off, measured one after the other. The router is
  `budget-router serve --port P --data-dir TMP`, which logs one INFO line per decision; the
  baseline is `python -m uvicorn bench.baseline_app:create_app --factory`, a FastAPI POST that
  parses a small pydantic body and returns a small JSON.
- Load: `bench/http_load.py`, asyncio keep-alive HTTP/1.1 connections sending pre-encoded
  requests. Light load is an open loop at a fixed rate on {light_connections} connections, each
  request timed from when it was due (no coordinated omission); peak is a closed loop on
  {peak_connections} connections. Each server first gets a {warmup_s:g} s closed-loop warm-up,
  not reported.
- Router workload: fresh tasks per phase, {per_task} decisions per task ({tasks} tasks opened,
  {decisions} decisions measured), {peak_connections} tasks advancing together; a seeded
  (seed {seed}) mix of step kinds (plan first, final synthesis last), types, growing input
  tokens and signals. Budgets are large enough that nothing is refused; only the status code
  of a response is checked (non-2xx counts as an error).
- Latencies are nearest-rank percentiles over every request, in ms to the microsecond.

## Results

{table}

Router peak throughput / baseline peak throughput: {ratio:.3f}

## Targets

| target | measured | met |
|---|---|---|
| p99 under {p99_target:g} ms at {rate:g} decisions/s | {p99:.3f} ms | {p99_met} |
| peak decisions/s at least {ratio_target:g} x baseline | {router_rps:.1f} / {baseline_rps:.1f} \
= {ratio:.3f} | {ratio_met} |
"""


def render_markdown(
    runs: list[ServerRun],
    config: BenchConfig,
    command: str,
    started: datetime,
    machine: dict[str, str],
) -> str:
    """The results file: machine, command, setup, every measurement and the targets' verdict."""
    router, baseline = runs
    ratio = router.peak.requests_per_s / baseline.peak.requests_per_s
    rows = [(f"{run.name} `{run.endpoint}`", r) for run in runs for r in (run.light, run.peak)]
    return REPORT.format(
        quick_note=QUICK_NOTE if config.quick else "",
        command=command,
        code=code_version(),
        date=started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        **machine,
        light_connections=config.light_connections,
        peak_connections=config.peak_connections,
        warmup_s=config.warmup_s,
        per_task=config.decisions_per_task,
        tasks=router.tasks_opened,
        decisions=router.light.count + router.peak.count,
        seed=config.seed,
        table=markdown_table(rows),
        ratio=ratio,
        p99_target=P99_TARGET_MS,
        rate=config.light_rate,
        p99=router.light.p99_ms,
        p99_met="yes" if router.light.p99_ms < P99_TARGET_MS else "no",
        ratio_target=THROUGHPUT_TARGET_RATIO,
        router_rps=router.peak.requests_per_s,
        baseline_rps=baseline.peak.requests_per_s,
        ratio_met="yes" if ratio >= THROUGHPUT_TARGET_RATIO else "no",
    )


def main(argv: list[str] | None = None) -> list[ServerRun]:
    """Run the benchmark, print the table, write the markdown results to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m bench.decision_latency", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/decision_latency.md"))
    parser.add_argument("--quick", action="store_true", help="a few seconds; a smoke run")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = BenchConfig.quick_run() if args.quick else BenchConfig()
    command = shlex.join(["python", "-m", "bench.decision_latency", *(argv or sys.argv[1:])])
    started, machine = datetime.now(UTC), machine_facts()
    with tempfile.TemporaryDirectory(prefix="bench-decision-") as tmp:
        runs = run_benchmark(config, Path(tmp))
    document = render_markdown(runs, config, command, started, machine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document)
    print(document)
    return runs


if __name__ == "__main__":
    main()
