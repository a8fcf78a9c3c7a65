"""Single-step routing quality on real outcome data, through the running service.

``python -m bench.routing_quality [--quick] [--out docs/benchmarks]``: for each data set
(RouterBench, then MMLU-Pro), a VW model is warm-started offline from the train split's full
information (the router's own feature builders), then a full stack (broker, router, learner)
serves the test split as an agent would: one task per prompt, one decision, the chosen model's
outcome only (its real cost), close. Accuracy and cost are compared with every single model,
random, the per-prompt oracle and a RouteLLM-style threshold router; the cost trade-off
(lambda) is swept on the offline replay path. See ``docs/benchmarks/routing_quality.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import BenchError, code_version, machine_facts
from bench.data.datasets import RoutingDataset, mmlu_pro, routerbench
from bench.stack import StackConfig, full_stack, write_catalog
from learner.benchmark_data import BenchmarkTable
from learner.vw_model import ExplorationSpec, Namespaces, VWPolicyModel
from router_service.catalog import ModelSpec
from router_service.features import action_features, shared_features
from router_service.policy import cap_exploration
from router_service.schemas import Signals, Step

TRUST_DOMAIN = "bench"
TASK_DOLLARS = 0.10
MAX_EXPLORATION = 0.1  # the default trust domain's cap, which "bench" falls back to
EXPLORATION = ExplorationSpec("epsilon", 0.05)
LAMBDAS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
QUICK_LAMBDAS = (1.0, 4.0)


@dataclass(frozen=True)
class Config:
    """Sizes of one run; ``quick`` is a smoke run of the harness."""

    seed: int = 0
    quick: bool = False
    train_rows: int | None = None
    test_rows: int | None = None
    lambdas: tuple[float, ...] = LAMBDAS
    live_datasets: tuple[str, ...] = ("routerbench", "mmlu_pro")

    @classmethod
    def quick_run(cls) -> Config:
        return cls(
            quick=True,
            train_rows=200,
            test_rows=60,
            lambdas=QUICK_LAMBDAS,
            live_datasets=("routerbench",),
        )


@dataclass
class Point:
    """A routing policy's result on a test table: accuracy and total cost."""

    name: str
    accuracy: float
    cost: float
    detail: dict[str, Any] = field(default_factory=dict)


class Features:
    """The router's own features for a benchmark prompt (step, task, signals, context, models)."""

    def __init__(self, dataset: RoutingDataset) -> None:
        self.dataset = dataset
        self.specs = {e["id"]: ModelSpec.model_validate(e) for e in dataset.catalog}

    def step(self, table: BenchmarkTable, row: int, input_tokens: int) -> Step:
        return Step(
            kind="execution",
            type=table.eval_names[row],
            input_tokens=input_tokens,
            expected_output_tokens=self.dataset.expected_output_tokens,
        )

    def example(
        self, table: BenchmarkTable, row: int, input_tokens: int
    ) -> tuple[Namespaces, list[Namespaces]]:
        step = self.step(table, row, input_tokens)
        shared = shared_features(
            step,
            Signals(),
            trust_domain=TRUST_DOMAIN,
            task_type=self.dataset.name,
            tags={},
            context={"eval": table.eval_names[row]},
        )
        actions = []
        for model in table.models:
            spec = self.specs[model]
            cost = spec.token_cost(step.input_tokens, step.expected_output_tokens)
            actions.append(action_features(spec, cost))
        return shared, actions


def reward(correct: float, cost: float, lam: float) -> float:
    """The learner's step reward: quality - lambda x cost / the task's total_dollars."""
    return correct - lam * cost / TASK_DOLLARS


def warm_start(
    dataset: RoutingDataset, table: BenchmarkTable, rows: list[int], lam: float, seed: int
) -> VWPolicyModel:
    """A VW model trained offline on full information: every model's reward, probability 1."""
    features = Features(dataset)
    tokens = dataset.input_tokens(table)
    model = VWPolicyModel.create(EXPLORATION, seed)
    for row in rows:
        shared, actions = features.example(table, row, int(tokens[row]))
        for j in range(len(table.models)):
            r = reward(table.correct[row, j], table.cost[row, j], lam)
            model.learn(shared, actions, j, -r, 1.0)
    return model


def replay_online(
    dataset: RoutingDataset,
    model: VWPolicyModel,
    table: BenchmarkTable,
    rows: list[int],
    lam: float,
    seed: int,
) -> list[int]:
    """The offline stand-in for the live service: sample, observe the chosen model, learn."""
    features = Features(dataset)
    tokens = dataset.input_tokens(table)
    rng = random.Random(seed)
    chosen = []
    for row in rows:
        shared, actions = features.example(table, row, int(tokens[row]))
        pmf = cap_exploration(model.predict(shared, actions), MAX_EXPLORATION)
        j = _sample(pmf, rng)
        r = reward(table.correct[row, j], table.cost[row, j], lam)
        model.learn(shared, actions, j, -r, pmf[j])
        chosen.append(j)
    return chosen


def _sample(pmf: list[float], rng: random.Random) -> int:
    draw, cumulative = rng.random(), 0.0
    for index, p in enumerate(pmf):
        cumulative += p
        if draw < cumulative and p > 0:
            return index
    return max(range(len(pmf)), key=pmf.__getitem__)


def score(name: str, table: BenchmarkTable, rows: list[int], chosen: list[int]) -> Point:
    correct = [table.correct[r, j] for r, j in zip(rows, chosen, strict=True)]
    cost = [table.cost[r, j] for r, j in zip(rows, chosen, strict=True)]
    return Point(name, float(np.mean(correct)), float(np.sum(cost)))


def baselines(dataset: RoutingDataset, rows: list[int]) -> list[Point]:
    """Every single model, uniform random (expected), and the per-prompt oracle."""
    t = dataset.test
    points = [score(m, t, rows, [j] * len(rows)) for j, m in enumerate(t.models)]
    correct, cost = t.correct[rows], t.cost[rows]
    points.append(Point("random (expected)", float(correct.mean()), float(cost.mean(1).sum())))
    # Oracle: the cheapest correct model, else the cheapest model.
    oracle = [
        int(np.argmin(np.where(correct[i] >= 0.5, cost[i], np.inf)))
        if correct[i].max() >= 0.5
        else int(np.argmin(cost[i]))
        for i in range(len(rows))
    ]
    points.append(score("oracle", t, rows, oracle))
    return points


def routellm_curve(dataset: RoutingDataset, rows: list[int]) -> list[Point]:
    """Strong/weak threshold routing on a per-(eval, prompt-length quartile) win rate.

    The win rate of a cell is P(strong right and weak wrong) on the train split; a prompt goes
    to the strong model when its cell's win rate exceeds the threshold.
    """
    train, test = dataset.train, dataset.test
    s, w = train.model_index(dataset.strong), train.model_index(dataset.weak)
    edges = np.quantile(train.prompt_words, [0.25, 0.5, 0.75])

    def cells(table: BenchmarkTable, index: list[int]) -> list[tuple[str, int]]:
        quart = np.searchsorted(edges, table.prompt_words[index])
        return [(table.eval_names[i], int(q)) for i, q in zip(index, quart, strict=True)]

    wins: dict[tuple[str, int], list[float]] = {}
    train_rows = list(range(len(train)))
    for i, cell in zip(train_rows, cells(train, train_rows), strict=True):
        win = float(train.correct[i, s] >= 0.5 and train.correct[i, w] < 0.5)
        wins.setdefault(cell, []).append(win)
    rate = {cell: float(np.mean(v)) for cell, v in wins.items()}
    test_cells = [rate.get(c, 1.0) for c in cells(test, rows)]
    ts, tw = test.model_index(dataset.strong), test.model_index(dataset.weak)
    points = []
    for threshold in sorted({-1.0, *rate.values()}):
        chosen = [ts if r > threshold else tw for r in test_cells]
        point = score(f"routellm t={threshold:.3f}", test, rows, chosen)
        point.detail = {"threshold": threshold, "strong_share": chosen.count(ts) / len(rows)}
        points.append(point)
    return points


def frontier_value(points: list[tuple[float, float]], cost: float) -> float:
    """Best accuracy reachable at ``cost`` by mixing points (upper convex hull), 0 if none."""
    best = 0.0
    for c1, a1 in points:
        if c1 <= cost:
            best = max(best, a1)
            for c2, a2 in points:
                if c2 > cost and c2 > c1:
                    share = (cost - c1) / (c2 - c1)
                    best = max(best, a1 + share * (a2 - a1))
    return best


def aiq(points: list[tuple[float, float]], low: float, high: float, steps: int = 400) -> float:
    """RouterBench's AIQ: mean frontier accuracy over costs in [low, high] (trapezoid)."""
    grid = np.linspace(low, high, steps + 1)
    values = np.array([frontier_value(points, c) for c in grid])
    return float(np.sum((values[1:] + values[:-1]) / 2) / steps)


def sweep(
    dataset: RoutingDataset, train_rows: list[int], rows: list[int], config: Config
) -> dict[float, Point]:
    """The learned router per lambda on the offline replay path (warm start + online)."""
    points = {}
    for lam in config.lambdas:
        model = warm_start(dataset, dataset.train, train_rows, lam, config.seed)
        greedy = score("", dataset.test, rows, greedy_choices(dataset, model, rows))
        chosen = replay_online(dataset, model, dataset.test, rows, lam, config.seed)
        model.close()
        points[lam] = score(f"learned λ={lam:g} (replay)", dataset.test, rows, chosen)
        points[lam].detail = {
            "lambda": lam,
            "warm_start_greedy_accuracy": greedy.accuracy,
            "warm_start_greedy_cost": greedy.cost,
        }
    return points


def greedy_choices(dataset: RoutingDataset, model: VWPolicyModel, rows: list[int]) -> list[int]:
    """The warm-start model's top choice per test prompt, without exploring or learning."""
    features = Features(dataset)
    tokens = dataset.input_tokens(dataset.test)
    return [
        int(np.argmax(model.predict(*features.example(dataset.test, r, int(tokens[r])))))
        for r in rows
    ]


def choose_lambda(dataset: RoutingDataset, train_rows: list[int], config: Config) -> dict:
    """Pick lambda on the train split alone: warm start on 70%, replay online on 30%.

    The cheapest lambda whose validation accuracy is at least 95% of the strong model's is
    taken; if none reaches it, the most accurate one.
    """
    cut = int(0.7 * len(train_rows))
    fit, valid = train_rows[:cut], train_rows[cut:]
    strong = dataset.train.model_index(dataset.strong)
    target = 0.95 * float(dataset.train.correct[valid, strong].mean())
    results = []
    for lam in config.lambdas:
        model = warm_start(dataset, dataset.train, fit, lam, config.seed)
        chosen = replay_online(dataset, model, dataset.train, valid, lam, config.seed)
        model.close()
        p = score(str(lam), dataset.train, valid, chosen)
        results.append({"lambda": lam, "accuracy": p.accuracy, "cost": p.cost})
    good = [r for r in results if r["accuracy"] >= target]
    pick = min(good, key=lambda r: r["cost"]) if good else max(results, key=lambda r: r["accuracy"])
    return {"lambda": pick["lambda"], "target_accuracy": target, "validation": results}


def live_run(
    dataset: RoutingDataset,
    train_rows: list[int],
    rows: list[int],
    lam: float,
    config: Config,
    work: Path,
) -> dict[str, Any]:
    """Warm start offline, then serve the test rows through a full stack over HTTP."""
    work.mkdir(parents=True, exist_ok=True)
    model = warm_start(dataset, dataset.train, train_rows, lam, config.seed)
    model_path = work / "warm_start.vw"
    model.save(model_path)
    model.close()
    catalog = write_catalog(work / "catalog.json", dataset.catalog)
    stack_config = StackConfig(
        data_dir=work / "data",
        catalog_path=catalog,
        policy_model_path=model_path,
        seed=config.seed,
        lambda_initial=lam,
        lambda_step=0.0,
    )
    test, tokens = dataset.test, dataset.input_tokens(dataset.test)
    chosen: list[int] = []
    errors: dict[str, int] = {}
    versions: list[str] = []
    started = time.monotonic()
    with full_stack(stack_config) as stack, stack.client() as http:
        ready = time.monotonic()
        for n, row in enumerate(rows):
            task_id = f"{dataset.name}-{n}"
            model_id = _serve_one(http, dataset, test, row, int(tokens[row]), task_id, errors)
            if model_id is None:
                chosen.append(test.model_index(dataset.weak))
                continue
            chosen.append(test.model_index(model_id[0]))
            versions.append(model_id[1])
        served = time.monotonic()
        status = stack.wait_learned(len(rows), timeout_s=20.0)
        mode = stack.mode
    point = score(f"learned λ={lam:g} (live)", test, rows, chosen)
    swaps = sum(1 for a, b in itertools.pairwise(versions) if a != b)
    point.detail = {
        "lambda": lam,
        "stack": mode,
        "http_errors": errors,
        "stack_start_s": round(ready - started, 2),
        "serve_s": round(served - ready, 2),
        "policy_versions_seen": len(set(versions)),
        "policy_swaps": swaps,
        "first_policy_version": versions[0] if versions else None,
        "last_policy_version": versions[-1] if versions else None,
        "learner": {k: status.get(k) for k in ("consumed", "learned_steps", "snapshot")},
    }
    return {"point": point}


def _serve_one(
    http: httpx.Client,
    dataset: RoutingDataset,
    table: BenchmarkTable,
    row: int,
    input_tokens: int,
    task_id: str,
    errors: dict[str, int],
) -> tuple[str, str] | None:
    """One prompt as an agent: open, decide, report the chosen model's outcome, close."""
    eval_name = table.eval_names[row]
    calls: list[tuple[str, dict[str, Any]]] = [
        (
            "/v1/tasks",
            {
                "task_id": task_id,
                "trust_domain": TRUST_DOMAIN,
                "task_type": dataset.name,
                "budget": {
                    "total_dollars": TASK_DOLLARS,
                    "max_input_tokens": 1_000_000,
                    "max_output_tokens": 100_000,
                },
            },
        ),
        (
            "/v1/decide",
            {
                "task_id": task_id,
                "step": {
                    "kind": "execution",
                    "type": eval_name,
                    "input_tokens": input_tokens,
                    "expected_output_tokens": dataset.expected_output_tokens,
                },
                "context": {"eval": eval_name},
            },
        ),
    ]
    decision: dict[str, Any] = {}
    for path, body in calls:
        response = http.post(path, json=body)
        if response.status_code >= 300:
            key = f"{path} {response.status_code}"
            errors[key] = errors.get(key, 0) + 1
            return None
        decision = response.json()
    model = decision.get("model")
    if model is None:
        errors[f"decide action {decision.get('action')}"] = 1
        return None
    j = table.model_index(model)
    correct = bool(table.correct[row, j] >= 0.5)
    for path, body in (
        (
            "/v1/outcomes",
            {
                "decision_id": decision["decision_id"],
                "success": correct,
                "quality": float(correct),
                "input_tokens": input_tokens,
                "output_tokens": dataset.expected_output_tokens,
                "cost_dollars": float(table.cost[row, j]),
            },
        ),
        (f"/v1/tasks/{task_id}/close", {"success": correct, "quality": float(correct)}),
    ):
        response = http.post(path, json=body)
        if response.status_code >= 300:
            key = f"{path.split('/')[2]} {response.status_code}"
            errors[key] = errors.get(key, 0) + 1
    return model, decision["policy_version"]


def run_dataset(dataset: RoutingDataset, config: Config, work: Path) -> dict[str, Any]:
    """Baselines, the lambda sweep, lambda chosen on train, and (if configured) the live run."""
    rng = random.Random(config.seed)
    train_rows = list(range(len(dataset.train)))
    rng.shuffle(train_rows)
    rows = list(range(len(dataset.test)))
    rng.shuffle(rows)
    if config.train_rows is not None:
        train_rows = train_rows[: config.train_rows]
    if config.test_rows is not None:
        rows = rows[: config.test_rows]
    singles = baselines(dataset, rows)
    routellm = routellm_curve(dataset, rows)
    learned = sweep(dataset, train_rows, rows, config)
    picked = choose_lambda(dataset, train_rows, config)
    live = None
    if dataset.name in config.live_datasets:
        live = live_run(dataset, train_rows, rows, picked["lambda"], config, work / dataset.name)
    costs = [p.cost for p in singles[: len(dataset.test.models)]]
    low, high = min(costs), max(costs)
    single_pts = [(p.cost, p.accuracy) for p in singles[: len(dataset.test.models)]]
    cheapest = min(single_pts)
    return {
        "dataset": dataset.name,
        "pricing": dataset.pricing,
        "train_prompts": len(train_rows),
        "test_prompts": len(rows),
        "strong": dataset.strong,
        "weak": dataset.weak,
        "singles": singles,
        "routellm": routellm,
        "learned": list(learned.values()),
        "lambda_choice": picked,
        "live": live["point"] if live else None,
        "aiq": {
            "cost_range": [low, high],
            "single models (mixtures)": aiq(single_pts, low, high),
            "routellm": aiq([cheapest, *[(p.cost, p.accuracy) for p in routellm]], low, high),
            "learned (replay sweep)": aiq(
                [cheapest, *[(p.cost, p.accuracy) for p in learned.values()]], low, high
            ),
        },
    }


def to_json(results: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, Point):
            return asdict(value)
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return {"meta": meta, "datasets": convert(results)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write markdown, JSON and charts into ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m bench.routing_quality", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--quick", action="store_true", help="a small sample; a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = Config.quick_run() if args.quick else Config()
    config = Config(**{**asdict(config), "seed": args.seed})
    argv_used = sys.argv[1:] if argv is None else argv
    meta = {
        "command": shlex.join(["python", "-m", "bench.routing_quality", *argv_used]),
        "code": code_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine_facts(),
        "seed": config.seed,
        "quick": config.quick,
        "task_dollars": TASK_DOLLARS,
        "exploration": f"epsilon-greedy {EXPLORATION.epsilon}, capped at {MAX_EXPLORATION}",
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        results = [
            run_dataset(dataset, config, Path(tmp)) for dataset in (routerbench(), mmlu_pro())
        ]
    meta["wall_s"] = round(time.monotonic() - started, 1)
    document = to_json(results, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routing_quality.json").write_text(json.dumps(document, indent=1))
    markdown = render(document, args.out)
    (args.out / "routing_quality.md").write_text(markdown)
    print(markdown)
    if any(r["live"] and r["live"].detail["http_errors"] for r in results):
        raise BenchError("HTTP errors during the live run; see the report")
    return document


def _table(points: list[dict[str, Any]], strong: dict[str, Any]) -> str:
    lines = [
        "| policy | accuracy | total cost $ | accuracy / strong | cost / strong |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p['name']} | {100 * p['accuracy']:.1f}% | {p['cost']:.3f} | "
            f"{p['accuracy'] / strong['accuracy']:.3f} | {p['cost'] / strong['cost']:.3f} |"
        )
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    """Cost (log) against accuracy: single models, baselines, the sweep and the live point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    n = len(result["singles"]) - 2
    for p in result["singles"][:n]:
        ax.scatter(p["cost"], 100 * p["accuracy"], color="grey", s=18)
        ax.annotate(p["name"].split("/")[-1][:18], (p["cost"], 100 * p["accuracy"]), fontsize=6)
    for p, marker in zip(result["singles"][n:], ("x", "*"), strict=True):
        ax.scatter(p["cost"], 100 * p["accuracy"], marker=marker, s=60, label=p["name"])
    for key, label in (("routellm", "RouteLLM-style threshold"), ("learned", "learned, λ sweep")):
        pts = sorted(result[key], key=lambda p: p["cost"])
        ax.plot(
            [p["cost"] for p in pts], [100 * p["accuracy"] for p in pts], "o-", ms=3, label=label
        )
    if result["live"]:
        live = result["live"]
        ax.scatter(
            live["cost"], 100 * live["accuracy"], color="red", s=80, marker="D", label=live["name"]
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"total cost on {result['test_prompts']} test prompts ($, log)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{result['dataset']}: cost vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(document: dict[str, Any], out: Path) -> str:
    """The markdown report; charts are written next to it."""
    meta = document["meta"]
    m = meta["machine"]
    parts = [
        "# Routing quality on real outcome data",
        "",
        "**Quick mode: a smoke run on a small sample; not a measurement.**"
        if meta["quick"]
        else "",
        f"- Command: `{meta['command']}`",
        f"- Code: {meta['code']}",
        f"- Date: {meta['date']}; wall time {meta['wall_s']} s",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['python']} on {m['os']}, load {m['load']}",
        f"- Seed: {meta['seed']} (prompt order, VW, the router's sampling)",
        "",
        "## Protocol",
        "",
        PROTOCOL.format(task=meta["task_dollars"], exploration=meta["exploration"]),
    ]
    for result in document["datasets"]:
        singles = result["singles"]
        strong = next(p for p in singles if p["name"] == result["strong"])
        name = result["dataset"]
        png = f"routing_quality_{name}.png"
        chart(result, out / png)
        live = result["live"]
        choice = result["lambda_choice"]
        parts += [
            f"## Results: {name}",
            "",
            f"Test prompts: {result['test_prompts']}; warm start from {result['train_prompts']} "
            f"train prompts (full information, offline). Pricing: {result['pricing']}.",
            "",
            f"![cost vs accuracy]({png})",
            "",
            "### Online, through the service",
            "",
        ]
        if live is None:
            parts.append("Not run live in this mode (offline replay only).")
        else:
            d = live["detail"]
            parts += [
                _table([live, strong, *singles[-2:]], strong),
                "",
                f"Lambda {choice['lambda']:g}, chosen on the train split alone (warm start on "
                f"70%, online replay on 30%, cheapest lambda with validation accuracy >= "
                f"{100 * choice['target_accuracy']:.1f}% = 95% of {result['strong']}). "
                f"Stack: `{d['stack']}` (started in {d['stack_start_s']} s); "
                f"{result['test_prompts']} tasks served in {d['serve_s']} s; HTTP errors: "
                f"{d['http_errors'] or 'none'}; policy versions served: "
                f"{d['policy_versions_seen']} ({d['policy_swaps']} hot swaps, first "
                f"`{d['first_policy_version']}`, last `{d['last_policy_version']}`); learner: "
                f"{d['learner']}.",
                "",
                _verdict(live, strong),
            ]
        aiq = result["aiq"]
        parts += [
            "",
            "### Baselines",
            "",
            _table(singles, strong),
            "",
            "### Lambda sweep (offline replay: same warm start, same online protocol, in process)",
            "",
            _table(result["learned"], strong),
            "",
            "The warm start alone (its greedy choice, no exploration, no online updates):",
            "",
            "| lambda | accuracy | total cost $ |",
            "|---|---|---|",
            *[
                f"| {p['detail']['lambda']:g} | "
                f"{100 * p['detail']['warm_start_greedy_accuracy']:.1f}% | "
                f"{p['detail']['warm_start_greedy_cost']:.3f} |"
                for p in result["learned"]
            ],
            "",
            "### RouteLLM-style threshold router "
            f"(strong {result['strong']}, weak {result['weak']})",
            "",
            _table(result["routellm"], strong),
            "",
            "### Area under the cost-accuracy frontier (AIQ)",
            "",
            f"Over total cost in [{aiq['cost_range'][0]:.3f}, {aiq['cost_range'][1]:.3f}] $ "
            "(cheapest to dearest single model); frontier = upper convex hull of the policy's "
            "points plus the cheapest single model, 0 where no point is as cheap.",
            "",
            "| frontier | AIQ |",
            "|---|---|",
            *[f"| {k} | {v:.4f} |" for k, v in aiq.items() if k != "cost_range"],
            "",
        ]
    parts += ["## Reading the numbers", "", NOTES]
    return "\n".join(parts) + "\n"


def _verdict(live: dict[str, Any], strong: dict[str, Any]) -> str:
    acc = live["accuracy"] / strong["accuracy"]
    cost = live["cost"] / strong["cost"]
    met = acc >= 0.95 and cost <= 0.25
    return (
        f"Target (>= 95% of the strong model's accuracy at <= 25% of its cost, online): "
        f"{'met' if met else 'missed'}: {100 * acc:.1f}% of its accuracy at "
        f"{100 * cost:.1f}% of its cost."
    )


PROTOCOL = """\
- Data: `bench/data/` (see its PROVENANCE.md). RouterBench rows with a null `correct` are
  dropped, and then every prompt that lacks an outcome for some model (so 945 test prompts, not
  952). MMLU-Pro: 7 priced models, a seeded sample of 4,000 train and 2,000 test questions.
- The catalog the router gets holds exactly the data set's models (`BUDGET_ROUTER_CATALOG_PATH`),
  tiers as in `bench/data/datasets.py`. Outcomes always report `cost_dollars` = the data's real
  cost of the chosen model; catalog prices serve the router's estimates and reservations.
- Warm start: a VW model trained offline on the train split with full information (every
  model's reward, probability 1), built with the router's own feature builders
  (`router_service.features.shared_features` / `action_features`, `learner.vw_model`), reward
  `correct - lambda x cost / total_dollars`, the learner's formula. It is passed to router and
  learner as `BUDGET_ROUTER_POLICY_MODEL_PATH` / `BUDGET_ROUTER_LEARNER_MODEL_PATH`. The
  online numbers are therefore warm-started, not cold.
- Live: `bench/stack.py` starts `budget-router up` (broker + learner + router on one data dir) with
  `BUDGET_ROUTER_LEARNER_LAMBDA_INITIAL` = lambda and `BUDGET_ROUTER_LEARNER_LAMBDA_STEP=0`.
  Per test prompt, in a seeded order: `POST /v1/tasks` (trust domain `bench`, budget
  ${task}, no reserves), `POST /v1/decide` (kind `execution`, type = eval name, input tokens =
  1.3 x prompt words, context `eval=<name>`), `POST /v1/outcomes` for the chosen model only
  (success = quality = correct), `POST /v1/tasks/{{id}}/close`. The learner learns from that
  partial feedback and the router hot-swaps its snapshots. Exploration: {exploration}.
- Lambda sweep: the same warm start and online protocol replayed in process (no HTTP, no
  governor: budgets are generous so the governor never acts here, and no snapshot lag), to keep
  the sweep fast. Random is the expectation of a uniform choice. The oracle takes the cheapest
  correct model per prompt (the cheapest model when none is correct).
"""

NOTES = """\
- What limits the learned router: it sees the step type (eval name), prompt length and the
  models' estimated costs, not the prompt text. Within one eval every prompt looks alike
  apart from its length, so the best it can do is close to the best model per eval and length;
  the oracle's gap shows how much lies in per-prompt differences it cannot see.
- Online updates use the propensity of the chosen model: with epsilon-greedy over 7 to 11
  models an explored model has p ~ 0.005-0.01, so one explored outcome weighs 100-200 times a
  greedy one in VW's update; the replay sweep against the warm start's greedy choice shows
  what this costs.
- The RouteLLM-style baseline uses a per-(eval, prompt-length quartile) win rate, not a trained
  prompt classifier, so it is a weak stand-in for RouteLLM proper.
"""


if __name__ == "__main__":
    main()
