"""Multi-step agent tasks under budgets, driven through the running service over HTTP.

``python -m bench.agent_sim [--quick] [--out docs/benchmarks]``: seeded tasks whose steps,
token counts and context growth come from real agent traces (``bench/data/agent_steps.parquet``)
and whose per-step success depends on the model's tier and the step kind (rates measured on
RouterBench, see :func:`success_rates`), with path dependence (failed control steps are retried
and add work, malformed tool calls raise recovery pressure, failed verifications add a fix).
Each policy (strongest, cheapest, static rules by kind, the learned router, the oracle) runs
the same tasks with the same random draws on its own full stack, against the default catalog.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np

from bench import BenchError, code_version, machine_facts
from bench.data.datasets import DATA_DIR, ROUTERBENCH_TIERS
from bench.stack import StackConfig, full_stack
from learner.benchmark_data import EVAL_STEP_KINDS, load_routerbench
from router_service.catalog import Catalog, ModelSpec

KINDS = ("control", "execution", "verification", "presentation", "final_synthesis")
EDIT_COMMANDS = {"sed", "cp", "echo", "patch", "awk", "mkdir", "cat>"}
RUN_COMMANDS = {"python", "python3", "pytest", "pip", "pip3"}
# Budget = factor x what the task's planned steps cost on the strongest model: generous pays
# for the strongest model with half again for retries, medium needs a mix, tight cheap models.
BUDGET_LEVELS = {"tight": 0.25, "medium": 0.6, "generous": 1.5}
RESERVE_SHARE = 0.15
MAX_RETRIES = 3  # per step
RETRIES_PER_PLANNED_STEP = 1  # hard_stop_after_retries = this x the task's planned steps
UNPRICED_AS = "gpt-5-nano"  # the self-hosted model's outcomes are costed at this model's prices
# On a loaded shared machine the stack's fast consumer timeouts (bench/stack.py) rebalance the
# learner's group mid-commit; these keep its membership through slow batches.
LOADED_MACHINE_ENV = {
    "BUDGET_ROUTER_LEARNER_SESSION_TIMEOUT_MS": "10000",
    "BUDGET_ROUTER_LEARNER_HEARTBEAT_INTERVAL_MS": "1000",
    "BUDGET_ROUTER_LEARNER_MAX_POLL_INTERVAL_MS": "30000",
}
STATIC_TIERS = {
    "control": "large",
    "execution": "medium",
    "verification": "medium",
    "presentation": "small",
    "final_synthesis": "large",
}


@dataclass(frozen=True)
class SimStep:
    kind: str
    type: str
    input_tokens: int
    output_tokens: int
    optional: bool = False


@dataclass(frozen=True)
class SimTask:
    task_id: str
    level: str
    budget: float
    steps: list[SimStep]
    seed: int


@dataclass
class TaskResult:
    task_id: str
    level: str
    budget: float
    success: bool
    spent: float
    aborted: bool
    final_needed: bool
    final_served: bool
    steps: int
    retries: int
    http_errors: int
    final_fallback: bool = False
    actions: dict[str, int] = field(default_factory=dict)


def success_rates(path: Path = DATA_DIR / "routerbench.parquet") -> dict[str, dict[str, float]]:
    """P(step succeeds) per tier and step kind, from RouterBench accuracy by tier and eval.

    ARC -> control, MBPP -> execution, Winogrande -> verification (the labelling in
    ``learner.benchmark_data``); presentation takes the tier's best eval (the easiest work),
    final synthesis the tier's mean over the three.
    """
    table = load_routerbench(path, "train")
    rates: dict[str, dict[str, float]] = {}
    for tier in ("small", "medium", "large", "frontier"):
        cols = [j for j, m in enumerate(table.models) if ROUTERBENCH_TIERS[m] == tier]
        by_kind = {}
        for eval_name, kind in EVAL_STEP_KINDS.items():
            rows = [i for i, e in enumerate(table.eval_names) if e == eval_name]
            by_kind[kind] = float(table.correct[np.ix_(rows, cols)].mean())
        by_kind["presentation"] = max(by_kind.values())
        by_kind["final_synthesis"] = float(np.mean(list(by_kind.values())[:3]))
        rates[tier] = by_kind
    return rates


def load_traces(path: Path = DATA_DIR / "agent_steps.parquet") -> dict[str, list[tuple]]:
    """Per trajectory: (prompt_tokens, completion + reasoning tokens, command) by step."""
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT trajectory, prompt_tokens, completion_tokens + reasoning_tokens, command "
            "FROM read_parquet(?) ORDER BY trajectory, step",
            [str(path)],
        ).fetchall()
    traces: dict[str, list[tuple]] = {}
    for trajectory, prompt, completion, command in rows:
        traces.setdefault(trajectory, []).append((prompt, max(1, completion), command))
    return traces


def _kind(command: str | None) -> tuple[str, str]:
    if command in RUN_COMMANDS:
        return "verification", "test_run"
    if command in EDIT_COMMANDS:
        return "execution", "edit"
    return "execution", "extraction"


def make_tasks(
    traces: dict[str, list[tuple]],
    catalog: dict[str, ModelSpec],
    per_level: int,
    max_steps: int,
    seed: int,
) -> list[SimTask]:
    """Seeded tasks: a trace's first steps, planning first, an optional summary, a synthesis.

    Budgets are a multiple (``BUDGET_LEVELS``) of what the task's planned steps would cost on
    the strongest priced model of the catalog.
    """
    rng = random.Random(seed)
    names = sorted(traces)
    reference = catalog[strongest_model(catalog)]
    tasks = []
    for level, factor in BUDGET_LEVELS.items():
        for n in range(per_level):
            trace = traces[rng.choice(names)]
            length = min(len(trace), rng.randint(max_steps // 2, max_steps))
            prompt0, out0, _ = trace[0]
            steps = [SimStep("control", "planning", prompt0, out0)]
            for prompt, out, command in trace[1:length]:
                kind, step_type = _kind(command)
                steps.append(SimStep(kind, step_type, prompt, out))
            last = trace[length - 1][0]
            steps.append(SimStep("presentation", "summarize", last, 300, optional=True))
            steps.append(SimStep("final_synthesis", "final_synthesis", last, 800))
            cost = sum(reference.token_cost(s.input_tokens, s.output_tokens) or 0 for s in steps)
            tasks.append(SimTask(f"{level}-{n}", level, round(factor * cost, 6), steps, n))
    return tasks


def strongest_model(catalog: dict[str, ModelSpec]) -> str:
    """The priced model of the highest tier, the dearest output among equals."""
    priced = {m: s for m, s in catalog.items() if s.priced}
    return max(priced, key=lambda m: (priced[m].tier_rank, priced[m].output_price_per_mtok))


class World:
    """The simulated environment: seeded success draws shared by every policy."""

    def __init__(self, catalog: dict[str, ModelSpec], rates: dict[str, dict[str, float]]):
        self.catalog = catalog
        self.rates = rates

    def p_success(self, model: str, kind: str) -> float:
        return self.rates[self.catalog[model].tier][kind]

    def succeeds(self, task: SimTask, index: int, attempt: int, model: str, kind: str) -> bool:
        """Common random numbers: the same (task, step, attempt) draw for every policy."""
        u = random.Random(f"{task.task_id}:{task.seed}:{index}:{attempt}").random()
        return u < self.p_success(model, kind)

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        spec = self.catalog[model]
        if not spec.priced:
            spec = self.catalog[UNPRICED_AS]
        return spec.token_cost(input_tokens, output_tokens) or 0.0


Chooser = Callable[[SimTask, int, int, SimStep], list[str] | None]


def policies(world: World) -> dict[str, Chooser]:
    """Candidate lists per policy (None = let the router choose among every model)."""
    priced = {m: s for m, s in world.catalog.items() if s.priced}
    strongest = strongest_model(world.catalog)
    cheapest = min(priced, key=lambda m: world.cost(m, 10_000, 1_000))
    by_tier = {
        kind: min(
            (m for m, s in priced.items() if s.tier == tier),
            key=lambda m: world.cost(m, 10_000, 1_000),
        )
        for kind, tier in STATIC_TIERS.items()
    }

    def oracle(task: SimTask, index: int, attempt: int, step: SimStep) -> list[str]:
        """The cheapest model that succeeds on this draw, else the cheapest (fail cheaply)."""
        order = sorted(priced, key=lambda m: world.cost(m, step.input_tokens, step.output_tokens))
        for model in order:
            if world.succeeds(task, index, attempt, model, step.kind):
                return [model]
        return [order[0]]

    return {
        f"always strongest ({strongest})": lambda *_: [strongest],
        f"always cheapest ({cheapest})": lambda *_: [cheapest],
        "static rules by kind": lambda task, i, a, step: [by_tier[step.kind]],
        "learned router": lambda *_: None,
        "oracle": oracle,
    }


def run_task(http: httpx.Client, world: World, task: SimTask, choose: Chooser) -> TaskResult:
    """Drive one task as an agent runtime: decide, call (simulated), report, close."""
    result = TaskResult(
        task.task_id, task.level, task.budget, False, 0.0, False, True, False, 0, 0, 0
    )
    opened = http.post(
        "/v1/tasks",
        json={
            "task_id": task.task_id,
            "trust_domain": "sim",
            "task_type": "coding",
            "planned_steps": len(task.steps),
            "budget": {
                "total_dollars": task.budget,
                "max_input_tokens": 50_000_000,
                "max_output_tokens": 5_000_000,
                "reserve_for_final_synthesis": round(RESERVE_SHARE * task.budget, 6),
                "hard_stop_after_retries": RETRIES_PER_PLANNED_STEP * len(task.steps),
            },
        },
    )
    if opened.status_code != 201:
        result.http_errors += 1
        return result
    queue = list(task.steps)
    malformed, ok, index = 0, True, 0
    while queue:
        step = queue.pop(0)
        if result.aborted and step.kind != "final_synthesis":
            continue
        index += 1
        done, retries = False, 0
        while not done:
            body: dict[str, Any] = {
                "task_id": task.task_id,
                "step": {
                    "kind": step.kind,
                    "type": step.type,
                    "input_tokens": step.input_tokens,
                    "expected_output_tokens": step.output_tokens,
                    "optional": step.optional,
                },
                "signals": {
                    "retries": retries,
                    "malformed_tool_args": malformed,
                    "context_pressure": min(1.0, step.input_tokens / 128_000),
                },
            }
            candidates = choose(task, index, retries, step)
            if candidates is not None:
                body["candidates"] = candidates
            response = http.post("/v1/decide", json=body)
            if response.status_code == 200 and response.json()["action"] == "require_confirmation":
                response = http.post("/v1/decide", json={**body, "confirmed": True})
            if response.status_code != 200:
                result.http_errors += 1
                ok = False
                break
            decision = response.json()
            action = decision["action"]
            result.actions[action] = result.actions.get(action, 0) + 1
            if (
                decision["model"] is None
                and step.kind == "final_synthesis"
                and "candidates" in body
            ):
                # The policy's one model does not fit the reserve: the runtime lets the router
                # pick any model for the synthesis rather than give up.
                result.final_fallback = True
                body.pop("candidates")
                response = http.post("/v1/decide", json=body)
                if response.status_code != 200:
                    result.http_errors += 1
                    ok = False
                    break
                decision = response.json()
                action = decision["action"]
            if decision["model"] is None:
                if action == "skip_optional":
                    done = True
                    break
                if step.kind == "final_synthesis":
                    ok = False
                    break
                result.aborted, ok = True, False
                break
            if step.kind == "final_synthesis":
                result.final_served = True
            model = decision["model"]
            used_in = min(step.input_tokens, decision["max_input_tokens"])
            used_out = min(step.output_tokens, decision["max_output_tokens"])
            success = world.succeeds(task, index, retries, model, step.kind)
            report = http.post(
                "/v1/outcomes",
                json={
                    "decision_id": decision["decision_id"],
                    "success": success,
                    "quality": 1.0 if success else 0.0,
                    "input_tokens": used_in,
                    "output_tokens": used_out,
                    "cost_dollars": world.cost(model, used_in, used_out),
                },
            )
            if report.status_code != 202:
                result.http_errors += 1
            result.steps += 1
            if success:
                done = True
                malformed = 0
                continue
            retries += 1
            result.retries += 1
            if (
                step.kind == "execution"
                and random.Random(f"{task.task_id}:m{index}").random() < 0.5
            ):
                malformed += 1  # a malformed tool call: recovery pressure on the next decision
            if step.kind == "control" and retries == 1:
                queue.insert(0, SimStep("execution", "extraction", step.input_tokens, 400))
            if step.kind == "verification" and retries == 1:
                queue.insert(0, SimStep("execution", "edit", step.input_tokens, 600))
            if retries > MAX_RETRIES:
                ok = False
                break
    closed = http.post(
        f"/v1/tasks/{task.task_id}/close", json={"success": ok, "quality": float(ok)}
    )
    if closed.status_code != 200:
        result.http_errors += 1
    else:
        result.spent = closed.json()["ledger"]["spent_dollars"]
    result.success = ok and result.final_served and not result.aborted
    return result


def run_policy(
    name: str, choose: Chooser, world: World, tasks: list[SimTask], seed: int, work: Path
) -> list[TaskResult]:
    """Every task, in order, on a fresh stack (so the learner learns from this policy alone)."""
    config = StackConfig(data_dir=work / "data", seed=seed, extra_env=dict(LOADED_MACHINE_ENV))
    with full_stack(config) as stack, stack.client() as http:
        return [run_task(http, world, task, choose) for task in tasks]


def summarise(results: list[TaskResult]) -> dict[str, Any]:
    n = len(results)
    return {
        "tasks": n,
        "success_rate": sum(r.success for r in results) / n,
        "mean_spend": float(np.mean([r.spent for r in results])),
        "mean_budget_used": float(np.mean([r.spent / r.budget for r in results])),
        "overshoot_tasks": sum(r.spent > r.budget + 1e-9 for r in results),
        "max_overshoot_dollars": max(0.0, max(r.spent - r.budget for r in results)),
        "final_reserve_available": f"{sum(r.final_served for r in results)}/{n}",
        "final_fallbacks": sum(r.final_fallback for r in results),
        "aborts": sum(r.aborted for r in results),
        "retries": sum(r.retries for r in results),
        "steps": sum(r.steps for r in results),
        "http_errors": sum(r.http_errors for r in results),
    }


HEADER = (
    "| policy | success | mean spend $ | budget used | overshoot | final served | "
    "final via fallback | aborts | retries | steps | HTTP errors |\n" + "|---" * 11 + "|"
)
REPORT = """# Agent workload with budgets
{quick}
- Command: `{command}`
- Code: {code}
- Date: {date}; wall time {wall_s} s
- Machine: {cpu}, {cores} cores, {python} on {os}, load {load}
- Seed: {seed} (task sampling, step success draws, the router's sampling)

## Setup

- Catalog: the default one (`router_service/data/catalog.json`), 14 models. Outcomes report
  `cost_dollars` from the catalog prices of the tokens actually used (the self-hosted, unpriced
  `llama-3.1-8b-instruct` is costed at {unpriced}'s prices).
- Tasks: {tasks} ({per_level} per budget level), each from a random real trajectory of
  `bench/data/agent_steps.parquet` (mini-swe-agent on SWE-bench): its first {min_steps} to
  {max_steps} steps with their real prompt tokens (context growth included) and completion +
  reasoning tokens; planning first (control), then per step execution (an edit: sed, cp, echo,
  patch...; otherwise extraction: cat, grep, find...) or verification (python, pytest, pip),
  an optional summary (presentation) and a final synthesis (800 output tokens).
- Budgets: total_dollars = {levels_text} what the task's planned steps would cost on the
  strongest model (`{strongest}`): generous pays for the strongest model throughout with half
  again for retries, medium needs a mix of models, tight mostly cheap ones (a user budgets
  against the model they would otherwise use, not against a mid-tier one); {reserve:.0%} of it
  reserved for the final synthesis; the governor's hard stop after {task_cap} retry per planned
  step (a 16-step task may retry more often than a 6-step one).
- Step success: P by the model's tier and the step kind, measured on RouterBench's train split
  (ARC -> control, MBPP -> execution, Winogrande -> verification, presentation = the tier's best
  eval, final synthesis = the tier's mean; tiers of the RouterBench models as in
  `bench/data/datasets.py`): {rates}. Draws are common random numbers: the same (task, step,
  attempt) gets the same uniform draw under every policy.
- Path dependence: a failed step is retried (signals.retries); a failed control step adds an
  extraction step, a failed verification an edit step; half the failed executions are
  malformed tool calls (signals.malformed_tool_args grows until a success); more than {retries}
  retries of a step fail the task; a governor abort skips to the final synthesis. A task
  succeeds when every required step and the final synthesis succeed without an abort.
- Policies, each on its own fresh stack (`bench/stack.py`: broker + router + learner):
  baselines pass `candidates=[one model]`, so the governor still enforces every budget rule;
  the learned router starts from the router's prior and learns online (default allocator);
  the oracle knows each draw and picks the cheapest priced model that succeeds on it.
- Outputs are capped at the decision's `max_output_tokens` and inputs at `max_input_tokens`,
  as an agent runtime must.

## Results

"final served": tasks whose final synthesis got a model (the reserve was there when needed);
"final via fallback": of those, how many needed the runtime's fallback because the policy's
one model did not fit what was left (then the router chose among all models).

{header}
{rows}

### By budget level (success rate, mean spend $)

| policy | {levels_head} |
|---|{levels_sep}
{level_rows}

![success vs spend](agent_workload.png)

## Verdict

{verdict}

The self-hosted (unpriced) model is billed at {unpriced}'s prices here; the governor reserves
for it an upper bound from the per-input and per-output token costs it has observed (a
default before the first outcome), which covers linear pricing whatever the step's mix.
"""


def chart(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, data in document["policies"].items():
        pts = [
            (data["by_level"][lvl]["mean_spend"], data["by_level"][lvl]["success_rate"])
            for lvl in BUDGET_LEVELS
            if lvl in data["by_level"]
        ]
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("mean spend per task ($, log), one point per budget level")
    ax.set_ylabel("task success (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(document: dict[str, Any]) -> str:
    meta, pol = document["meta"], document["policies"]
    rows = [
        f"| {name} | {100 * d['success_rate']:.1f}% | {d['mean_spend']:.4f} | "
        f"{100 * d['mean_budget_used']:.0f}% | {d['overshoot_tasks']} | "
        f"{d['final_reserve_available']} | {d['final_fallbacks']} | {d['aborts']} | "
        f"{d['retries']} | {d['steps']} | "
        f"{d['http_errors']} |"
        for name, d in pol.items()
    ]
    level_rows = [
        f"| {name} | "
        + " | ".join(
            f"{100 * d['by_level'][lvl]['success_rate']:.0f}%, "
            f"{d['by_level'][lvl]['mean_spend']:.4f}"
            for lvl in BUDGET_LEVELS
        )
        + " |"
        for name, d in pol.items()
    ]
    overshoot = sum(d["overshoot_tasks"] for d in pol.values())
    finals = all(
        d["final_reserve_available"].split("/")[0] == d["final_reserve_available"].split("/")[1]
        for d in pol.values()
    )
    learned, strongest = pol["learned router"], next(v for k, v in pol.items() if "strongest" in k)
    verdict = (
        f"- Budget overshoot: {overshoot} tasks over all policies "
        f"({'zero, as required' if overshoot == 0 else 'NOT zero'}).\n"
        f"- Final-synthesis reserve available when needed: "
        f"{'always' if finals else 'NOT always'}.\n"
        f"- Learned router: {100 * learned['success_rate']:.1f}% success for "
        f"${learned['mean_spend']:.4f} per task; always-strongest "
        f"{100 * strongest['success_rate']:.1f}% for ${strongest['mean_spend']:.4f}; oracle "
        f"{100 * pol['oracle']['success_rate']:.1f}% for ${pol['oracle']['mean_spend']:.4f}."
    )
    rates = "; ".join(
        f"{tier}: " + ", ".join(f"{k[:5]} {v:.2f}" for k, v in kinds.items())
        for tier, kinds in meta["success_rates"].items()
    )
    m = meta["machine"]
    return REPORT.format(
        quick="\n**Quick mode: a smoke run on a few tasks; not a measurement.**\n"
        if meta["quick"]
        else "",
        command=meta["command"],
        code=meta["code"],
        date=meta["date"],
        wall_s=meta["wall_s"],
        cpu=m["cpu"],
        cores=m["cores"],
        python=m["python"],
        os=m["os"],
        load=m["load"],
        seed=meta["seed"],
        unpriced=UNPRICED_AS,
        tasks=meta["tasks"],
        per_level=meta["per_level"],
        min_steps=meta["max_steps"] // 2,
        max_steps=meta["max_steps"],
        reserve=RESERVE_SHARE,
        retries=MAX_RETRIES,
        task_cap=RETRIES_PER_PLANNED_STEP,
        levels_text=", ".join(f"{k} {v:g}x" for k, v in BUDGET_LEVELS.items()),
        strongest=meta["strongest"],
        rates=rates,
        header=HEADER,
        rows="\n".join(rows),
        levels_head=" | ".join(BUDGET_LEVELS),
        levels_sep="---|" * len(BUDGET_LEVELS),
        level_rows="\n".join(level_rows),
        verdict=verdict,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every policy on the same tasks; write markdown, JSON and a chart into ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m bench.agent_sim", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--quick", action="store_true", help="a few tasks; a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    per_level, max_steps = (2, 6) if args.quick else (40, 16)
    catalog = Catalog.from_file(None).snapshot()
    world = World(catalog, success_rates())
    tasks = make_tasks(load_traces(), catalog, per_level, max_steps, args.seed)
    meta: dict[str, Any] = {
        "command": shlex.join(
            ["python", "-m", "bench.agent_sim", *(sys.argv[1:] if argv is None else argv)]
        ),
        "code": code_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine_facts(),
        "seed": args.seed,
        "quick": args.quick,
        "tasks": len(tasks),
        "per_level": per_level,
        "max_steps": max_steps,
        "success_rates": world.rates,
        "strongest": strongest_model(catalog),
    }
    started = time.monotonic()
    document: dict[str, Any] = {"meta": meta, "policies": {}}
    with tempfile.TemporaryDirectory(prefix="bench-agents-") as tmp:
        for n, (name, choose) in enumerate(policies(world).items()):
            results = run_policy(name, choose, world, tasks, args.seed, Path(tmp) / str(n))
            summary = summarise(results)
            summary["by_level"] = {
                lvl: summarise([r for r in results if r.level == lvl]) for lvl in BUDGET_LEVELS
            }
            summary["tasks_detail"] = [asdict(r) for r in results]
            document["policies"][name] = summary
    meta["wall_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "agent_workload.json").write_text(json.dumps(document, indent=1))
    chart(document, args.out / "agent_workload.png")
    markdown = render(document)
    (args.out / "agent_workload.md").write_text(markdown)
    print(markdown)
    if any(p["http_errors"] for p in document["policies"].values()):
        raise BenchError("HTTP errors during the run; see the report")
    return document


if __name__ == "__main__":
    main()
