"""Single-step routing quality on real outcome data, through the running service.

``python -m bench.routing_quality [--quick] [--out docs/benchmarks]``: for each data set
(RouterBench, then MMLU-Pro), a VW model is warm-started offline from logged bandit feedback
on the train split (a uniform logging policy, propensities 1/K; the router's own feature
builders, the prompt's text included), then a full stack (broker, router, learner) serves the
test split as an agent would: one task per prompt, one decision with the prompt, the chosen
model's outcome only (its real cost), close. The price of a dollar (lambda) is the dual of a
spend target, set on the train split and then moved online by the learner's allocator.
Accuracy and cost are compared with every single model, random, the per-prompt oracle, the
best model per eval name and a RouteLLM-style threshold router, also at matched cost; lambda
is swept on the offline replay path for the frontier. See ``docs/benchmarks/routing_quality.md``.
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
from bench.agent_sim import LOADED_MACHINE_ENV
from bench.data.datasets import LOADERS, RoutingDataset, datasets_named
from bench.stack import StackConfig, full_stack, write_catalog
from learner.allocator import BudgetAllocator
from learner.benchmark_data import BenchmarkTable
from learner.vw_model import (
    ExplorationSpec,
    LabeledExample,
    Namespaces,
    VWPolicyModel,
    example_lines,
)
from router_service.catalog import ModelSpec
from router_service.features import (
    CONTENT_BUCKETS,
    action_features,
    content_features,
    shared_features,
)
from router_service.policy import cap_exploration
from router_service.prompt_embedding import EMBEDDING_DIMS, PromptEmbedder
from router_service.schemas import Signals, Step

TRUST_DOMAIN = "bench"
TASK_DOLLARS = 0.10
MAX_EXPLORATION = 0.1  # the default trust domain's cap, which "bench" falls back to
EXPLORATION = ExplorationSpec("epsilon", 0.01)
LEARNING = "--cb_type mtr -l 0.05"
LOG_ROUNDS = 8  # times each train prompt is logged under the uniform logging policy
PROPENSITY_FLOOR = 0.05  # the learner's default floor on logged propensities
# The price of a dollar: 0 (quality only), then 0.25 to 16 in steps of sqrt(2).
LAMBDAS = (0.0, *(round(0.25 * 2 ** (k / 2), 3) for k in range(13)))
QUICK_LAMBDAS = (1.0, 4.0)
LAMBDA_STEP = 2.0  # the allocator's dual step, live and in the matched-cost replay
# The targets: share of the strong model's cost, and the accuracy to reach.
COST_TARGETS = {"routerbench": 0.25, "mmlu_pro": 0.30}
ACCURACY_TARGETS = {"routerbench": 0.880}  # else: the strong model's accuracy


@dataclass(frozen=True)
class Config:
    """Sizes of one run; ``quick`` is a smoke run of the harness."""

    seed: int = 0
    quick: bool = False
    train_rows: int | None = None
    test_rows: int | None = None
    lambdas: tuple[float, ...] = LAMBDAS
    live_datasets: tuple[str, ...] = ("routerbench", "mmlu_pro")
    log_rounds: int = LOG_ROUNDS
    content: bool = True
    prompt_embedding_dims: int | None = None  # the router's BUDGET_ROUTER_PROMPT_EMBEDDING

    @classmethod
    def quick_run(cls) -> Config:
        return cls(
            quick=True,
            train_rows=200,
            test_rows=60,
            lambdas=QUICK_LAMBDAS,
            live_datasets=("routerbench",),
            log_rounds=2,
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

    def __init__(
        self, dataset: RoutingDataset, content: bool = True, embedder: PromptEmbedder | None = None
    ) -> None:
        self.dataset = dataset
        self.content = content
        self.embedder = embedder
        self.specs = {e["id"]: ModelSpec.model_validate(e) for e in dataset.catalog}
        self._cache: dict[tuple[int, int], tuple[Namespaces, list[Namespaces]]] = {}

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
        key = (id(table), row)
        if key not in self._cache:
            self._cache[key] = self._build(table, row, input_tokens)
        return self._cache[key]

    def _build(
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
            prompt=table.prompts[row] if self.content else None,
            embedder=self.embedder,
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


def logged_feedback(
    table: BenchmarkTable, rows: list[int], rounds: int, seed: int
) -> list[tuple[int, int, float]]:
    """Bandit feedback from a uniform logging policy: (row, logged model, propensity 1/K).

    Each of ``rows`` is logged ``rounds`` times, in a fresh seeded order per round; only the
    logged model's outcome is used, as a deployment's logs would hold.
    """
    rng = random.Random(seed)
    k = len(table.models)
    log = []
    for _ in range(rounds):
        order = list(rows)
        rng.shuffle(order)
        log += [(row, rng.randrange(k), 1.0 / k) for row in order]
    return log


def warm_start(
    features: Features, table: BenchmarkTable, rows: list[int], lam: float, config: Config
) -> VWPolicyModel:
    """A VW model trained offline on the train split's logged bandit feedback at ``lam``."""
    tokens = features.dataset.input_tokens(table)
    model = VWPolicyModel.create(EXPLORATION, config.seed, LEARNING)
    examples = []
    for row, j, probability in logged_feedback(table, rows, config.log_rounds, config.seed):
        shared, actions = features.example(table, row, int(tokens[row]))
        r = reward(table.correct[row, j], table.cost[row, j], lam)
        examples.append(LabeledExample(shared, actions, j, -r, probability))
    model.learn_many(examples)
    return model


def replay_online(
    features: Features,
    model: VWPolicyModel,
    table: BenchmarkTable,
    rows: list[int],
    allocator: BudgetAllocator,
    seed: int,
) -> list[int]:
    """The offline stand-in for the live service: sample, observe, learn, move the price.

    As the learner does: the propensity is floored, and each closed task takes one dual step
    of the allocator, whose price weighs the next updates' cost.
    """
    tokens = features.dataset.input_tokens(table)
    rng = random.Random(seed)
    chosen = []
    for row in rows:
        shared, actions = features.example(table, row, int(tokens[row]))
        pmf = cap_exploration(model.predict(shared, actions), MAX_EXPLORATION)
        j = _sample(pmf, rng)
        cost = table.cost[row, j]
        r = reward(table.correct[row, j], cost, allocator.price(TRUST_DOMAIN))
        model.learn(shared, actions, j, -r, max(pmf[j], PROPENSITY_FLOOR))
        allocator.observe_task(TRUST_DOMAIN, cost, TASK_DOLLARS)
        chosen.append(j)
    return chosen


def fixed_price(lam: float) -> BudgetAllocator:
    """An allocator whose price stays at ``lam`` (dual step 0)."""
    return BudgetAllocator(lam, 0.0, 1.0)


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


def per_eval_curve(dataset: RoutingDataset, rows: list[int]) -> list[Point]:
    """The best model per eval name on the train split, at each price of a dollar.

    Per eval name, the model with the highest mean train reward ``correct - lambda x cost /
    total_dollars``; lambda 0 is "the most accurate model per eval". Distinct rules only.
    """
    train, test = dataset.train, dataset.test
    evals = sorted(set(train.eval_names))
    names = np.array(train.eval_names)
    means = {e: (train.correct[names == e].mean(0), train.cost[names == e].mean(0)) for e in evals}
    points, seen = [], set()
    for lam in (0.0, *np.geomspace(0.05, 64, 40)):
        rule = {
            e: int(np.argmax(acc - lam * cost / TASK_DOLLARS)) for e, (acc, cost) in means.items()
        }
        key = tuple(sorted(rule.items()))
        if key in seen:
            continue
        seen.add(key)
        fallback = int(np.argmax(train.correct.mean(0)))
        chosen = [rule.get(test.eval_names[r], fallback) for r in rows]
        point = score(f"per-eval rule λ={lam:.3g}", test, rows, chosen)
        point.detail = {"lambda": float(lam), "rule": {e: train.models[j] for e, j in rule.items()}}
        points.append(point)
    return points


def matched(point: Point, curve: list[Point], floor: tuple[float, float]) -> float:
    """A baseline curve's best accuracy (mixing its points) at ``point``'s cost."""
    return frontier_value([floor, *[(p.cost, p.accuracy) for p in curve]], point.cost)


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
    features: Features, train_rows: list[int], rows: list[int], config: Config
) -> dict[float, Point]:
    """The learned router per lambda on the offline replay path (warm start + online)."""
    dataset = features.dataset
    points = {}
    for lam in config.lambdas:
        model = warm_start(features, dataset.train, train_rows, lam, config)
        greedy = score("", dataset.test, rows, greedy_choices(features, model, rows))
        chosen = replay_online(features, model, dataset.test, rows, fixed_price(lam), config.seed)
        model.close()
        points[lam] = score(f"learned λ={lam:g} (replay)", dataset.test, rows, chosen)
        points[lam].detail = {
            "lambda": lam,
            "warm_start_greedy_accuracy": greedy.accuracy,
            "warm_start_greedy_cost": greedy.cost,
        }
    return points


def greedy_choices(features: Features, model: VWPolicyModel, rows: list[int]) -> list[int]:
    """The warm-start model's top choice per test prompt, without exploring or learning."""
    test = features.dataset.test
    tokens = features.dataset.input_tokens(test)
    return [int(np.argmax(model.predict(*features.example(test, r, int(tokens[r]))))) for r in rows]


def spend_target(dataset: RoutingDataset) -> float:
    """Dollars per task to aim at: the issue's share of the strong model's mean train cost."""
    strong = dataset.train.model_index(dataset.strong)
    return COST_TARGETS[dataset.name] * float(dataset.train.cost[:, strong].mean())


def choose_lambda(features: Features, train_rows: list[int], config: Config) -> dict:
    """The price of a dollar for the spend target, on the train split alone (the dual).

    Warm start on 70% at each lambda of the grid, replay online on 30%; the smallest lambda
    whose validation spend per task is within the target is the dual price (the dearest,
    cheapest-spending lambda if none is).
    """
    dataset = features.dataset
    cut = int(0.7 * len(train_rows))
    fit, valid = train_rows[:cut], train_rows[cut:]
    target = spend_target(dataset)
    results = []
    for lam in config.lambdas:
        model = warm_start(features, dataset.train, fit, lam, config)
        chosen = replay_online(features, model, dataset.train, valid, fixed_price(lam), config.seed)
        model.close()
        p = score(str(lam), dataset.train, valid, chosen)
        results.append(
            {"lambda": lam, "accuracy": p.accuracy, "cost_per_task": p.cost / len(valid)}
        )
    within = [r for r in results if r["cost_per_task"] <= target]
    pick = (
        min(within, key=lambda r: r["lambda"])
        if within
        else min(results, key=lambda r: r["cost_per_task"])
    )
    return {"lambda": pick["lambda"], "target_per_task": target, "validation": results}


def live_run(
    dataset: RoutingDataset,
    train_rows: list[int],
    rows: list[int],
    lam: float,
    config: Config,
    work: Path,
    features: Features,
) -> dict[str, Any]:
    """Warm start offline, then serve the test rows through a full stack over HTTP."""
    work.mkdir(parents=True, exist_ok=True)
    model = warm_start(features, dataset.train, train_rows, lam, config)
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
        lambda_step=LAMBDA_STEP,
        extra_env={
            **LOADED_MACHINE_ENV,
            "BUDGET_ROUTER_LEARNER_SPEND_TARGET_RATIO": repr(spend_target(dataset) / TASK_DOLLARS),
            **prompt_embedding_env(config),
        },
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
            model_id = _serve_one(
                http, dataset, test, row, int(tokens[row]), task_id, errors, config.content
            )
            if model_id is None:
                chosen.append(test.model_index(dataset.weak))
                continue
            chosen.append(test.model_index(model_id[0]))
            versions.append(model_id[1])
        served = time.monotonic()
        status = stack.wait_learned(len(rows), timeout_s=20.0)
        mode = stack.mode
    point = score(f"learned, target ${spend_target(dataset):.5f}/task (live)", test, rows, chosen)
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
        "final_lambdas": status.get("lambdas"),
    }
    return {"point": point}


def prompt_embedding_env(config: Config) -> dict[str, str]:
    """The router's settings for the run's prompt embedding, if it has one."""
    if config.prompt_embedding_dims is None:
        return {}
    return {
        "BUDGET_ROUTER_PROMPT_EMBEDDING": "wordllama",
        "BUDGET_ROUTER_PROMPT_EMBEDDING_DIMS": str(config.prompt_embedding_dims),
    }


def _serve_one(
    http: httpx.Client,
    dataset: RoutingDataset,
    table: BenchmarkTable,
    row: int,
    input_tokens: int,
    task_id: str,
    errors: dict[str, int],
    content: bool,
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
                **({"prompt": table.prompts[row]} if content else {}),
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
    dims = config.prompt_embedding_dims
    embedder = PromptEmbedder.wordllama(dims) if dims else None
    features = Features(dataset, config.content, embedder)
    singles = baselines(dataset, rows)
    routellm = routellm_curve(dataset, rows)
    per_eval = per_eval_curve(dataset, rows)
    learned = sweep(features, train_rows, rows, config)
    plain = sweep(Features(dataset, content=False), train_rows, rows, config)
    for point in plain.values():
        point.name = point.name.replace("(replay)", "no content (replay)")
    picked = choose_lambda(features, train_rows, config)
    dual = dual_replay(features, train_rows, rows, picked["lambda"], config)
    live = None
    if dataset.name in config.live_datasets:
        live = live_run(
            dataset, train_rows, rows, picked["lambda"], config, work / dataset.name, features
        )
    costs = [p.cost for p in singles[: len(dataset.test.models)]]
    low, high = min(costs), max(costs)
    single_pts = [(p.cost, p.accuracy) for p in singles[: len(dataset.test.models)]]
    cheapest = min(single_pts)
    compared = [*learned.values(), dual, *([live["point"]] if live else [])]
    matched_cost = [
        {
            "policy": p.name,
            "cost": p.cost,
            "accuracy": p.accuracy,
            "per-eval rule": matched(p, per_eval, cheapest),
            "routellm": matched(p, routellm, cheapest),
            "single models (mixtures)": frontier_value(single_pts, p.cost),
        }
        for p in compared
    ]
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
        "learned_no_content": list(plain.values()),
        "per_eval": per_eval,
        "lambda_choice": picked,
        "dual_replay": dual,
        "matched_cost": matched_cost,
        "feature_cost": feature_cost(features, rows),
        "live": live["point"] if live else None,
        "aiq": {
            "cost_range": [low, high],
            "single models (mixtures)": aiq(single_pts, low, high),
            "routellm": aiq([cheapest, *[(p.cost, p.accuracy) for p in routellm]], low, high),
            "per-eval rule": aiq([cheapest, *[(p.cost, p.accuracy) for p in per_eval]], low, high),
            "learned (replay sweep)": aiq(
                [cheapest, *[(p.cost, p.accuracy) for p in learned.values()]], low, high
            ),
            "learned without content (replay sweep)": aiq(
                [cheapest, *[(p.cost, p.accuracy) for p in plain.values()]], low, high
            ),
        },
    }


def dual_replay(
    features: Features, train_rows: list[int], rows: list[int], lam: float, config: Config
) -> Point:
    """The live protocol in process: warm start at the dual price, the allocator moving it."""
    dataset = features.dataset
    model = warm_start(features, dataset.train, train_rows, lam, config)
    allocator = BudgetAllocator(lam, LAMBDA_STEP, spend_target(dataset) / TASK_DOLLARS)
    chosen = replay_online(features, model, dataset.test, rows, allocator, config.seed)
    model.close()
    point = score(
        f"learned, target ${spend_target(dataset):.5f}/task (replay)", dataset.test, rows, chosen
    )
    point.detail = {"lambda_initial": lam, "lambda_final": allocator.price(TRUST_DOMAIN)}
    return point


def feature_cost(features: Features, rows: list[int], repeat: int = 3) -> dict[str, float]:
    """Microseconds per decision: the content features, and the whole example with/without."""
    test = features.dataset.test
    prompts = [test.prompts[r] for r in rows]
    started = time.perf_counter()
    for _ in range(repeat):
        for prompt in prompts:
            content_features(prompt)
    content_us = (time.perf_counter() - started) / (repeat * len(prompts)) * 1e6
    plain = Features(features.dataset, content=False)
    tokens = features.dataset.input_tokens(test)
    model = VWPolicyModel.create(EXPLORATION, 0, LEARNING)
    timings = {}
    for name, source in (("with_content", features), ("without_content", plain)):
        examples = [source._build(test, r, int(tokens[r])) for r in rows]
        started = time.perf_counter()
        for shared, actions in examples:
            example_lines(shared, actions)
        timings[f"example_text_us_{name}"] = (time.perf_counter() - started) / len(rows) * 1e6
        started = time.perf_counter()
        for shared, actions in examples:
            model.predict(shared, actions)
        timings[f"predict_us_{name}"] = (time.perf_counter() - started) / len(rows) * 1e6
    model.close()
    return {
        "content_features_us": content_us,
        "mean_prompt_chars": float(np.mean([len(p) for p in prompts])),
        "actions": len(test.models),
        **timings,
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
    parser.add_argument(
        "--replay-only",
        action="store_true",
        help="skip the live stack: baselines and the in-process replay only (about a minute)",
    )
    parser.add_argument(
        "--datasets", default="routerbench,mmlu_pro", help="comma-separated: routerbench,mmlu_pro"
    )
    parser.add_argument(
        "--prompt-embedding",
        type=int,
        choices=EMBEDDING_DIMS,
        help="also embed prompts with wordllama at these dimensions (the embed extra)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    names = datasets_named(parser, args.datasets)
    config = Config.quick_run() if args.quick else Config()
    config = Config(**{**asdict(config), "seed": args.seed})
    if args.replay_only:
        config = Config(**{**asdict(config), "live_datasets": ()})
    config = Config(**{**asdict(config), "prompt_embedding_dims": args.prompt_embedding})
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
        "log_rounds": config.log_rounds,
        "prompt_embedding_dims": config.prompt_embedding_dims,
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        results = [run_dataset(LOADERS[name](), config, Path(tmp)) for name in names]
    meta["wall_s"] = round(time.monotonic() - started, 1)
    document = to_json(results, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = results_stem(names)
    (args.out / f"{stem}.json").write_text(json.dumps(document, indent=1))
    markdown = render(document, args.out)
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    if any(r["live"] and r["live"].detail["http_errors"] for r in results):
        raise BenchError("HTTP errors during the live run; see the report")
    return document


def results_stem(names: list[str]) -> str:
    """``routing_quality`` for a run that covers RouterBench, else suffixed by its data sets."""
    return "routing_quality" if "routerbench" in names else "_".join(["routing_quality", *names])


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
    for key, label in (
        ("routellm", "RouteLLM-style threshold"),
        ("per_eval", "best model per eval name"),
        ("learned", "learned, λ sweep"),
    ):
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
        f"- Seed: {meta['seed']} (prompt order, logging policy, VW, the router's sampling)",
        f"- Prompt embedding: wordllama, {meta['prompt_embedding_dims']} dimensions"
        if meta.get("prompt_embedding_dims")
        else "- Prompt embedding: none (the default)",
        "",
        "## Protocol",
        "",
        PROTOCOL.format(
            task=meta["task_dollars"],
            exploration=meta["exploration"],
            learning=LEARNING,
            rounds=meta["log_rounds"],
            step=LAMBDA_STEP,
            floor=PROPENSITY_FLOOR,
            buckets=CONTENT_BUCKETS,
        ),
    ]
    for result in document["datasets"]:
        parts += _render_dataset(result, out)
    parts += ["## Reading the numbers", "", NOTES]
    return "\n".join(parts) + "\n"


def _render_dataset(result: dict[str, Any], out: Path) -> list[str]:
    singles = result["singles"]
    strong = next(p for p in singles if p["name"] == result["strong"])
    name = result["dataset"]
    png = f"routing_quality_{name}.png"
    chart(result, out / png)
    live = result["live"]
    choice = result["lambda_choice"]
    parts = [
        f"## Results: {name}",
        "",
        f"Test prompts: {result['test_prompts']}; warm start from logged bandit feedback on "
        f"{result['train_prompts']} train prompts. Pricing: {result['pricing']}.",
        "",
        f"![cost vs accuracy]({png})",
        "",
        "### Online, through the service",
        "",
    ]
    dual = result["dual_replay"]
    target = (
        f"Spend target ${choice['target_per_task']:.5f} per task "
        f"({100 * COST_TARGETS[name]:.0f}% of {result['strong']}'s mean train cost); its "
        f"dual price on the train split alone: lambda {choice['lambda']:g} (validation "
        f"below), moved online by the allocator (step {LAMBDA_STEP:g})"
    )
    if live is None:
        parts += [
            "Not run live (`--replay-only`); the live protocol replayed in process:",
            "",
            _table([dual, strong, *singles[-2:]], strong),
            "",
            f"{target}; final lambda {dual['detail']['lambda_final']:.3g}.",
            "",
            _verdict(name, dual, strong),
        ]
    else:
        d = live["detail"]
        parts += [
            _table([live, dual, strong, *singles[-2:]], strong),
            "",
            f"{target}; final lambdas {d.get('final_lambdas')}. "
            f"Stack: `{d['stack']}` (started in {d['stack_start_s']} s); "
            f"{result['test_prompts']} tasks served in {d['serve_s']} s; HTTP errors: "
            f"{d['http_errors'] or 'none'}; policy versions served: "
            f"{d['policy_versions_seen']} ({d['policy_swaps']} hot swaps); learner: "
            f"{d['learner']}.",
            "",
            _verdict(name, live, strong),
        ]
    parts += [
        "",
        "| lambda (validation) | accuracy | $ per task |",
        "|---|---|---|",
        *[
            f"| {r['lambda']:g} | {100 * r['accuracy']:.1f}% | {r['cost_per_task']:.5f} |"
            for r in choice["validation"]
        ],
    ]
    aiq = result["aiq"]
    fc = result["feature_cost"]
    parts += [
        "",
        "### At matched cost",
        "",
        "Each learned point beside the best accuracy the baselines reach at the same total "
        "cost (mixing their points; the cheapest single model is always available).",
        "",
        "| policy | total cost $ | accuracy | per-eval rule | RouteLLM-style | single models |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['policy']} | {r['cost']:.3f} | {100 * r['accuracy']:.1f}% | "
            f"{100 * r['per-eval rule']:.1f}% | {100 * r['routellm']:.1f}% | "
            f"{100 * r['single models (mixtures)']:.1f}% |"
            for r in result["matched_cost"]
        ],
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
        _aiq_verdict(aiq),
        "",
        "### Feature building on the hot path",
        "",
        f"Per decision, on the test prompts (mean {fc['mean_prompt_chars']:.0f} chars, "
        f"{fc['actions']} candidate models): content features "
        f"{fc['content_features_us']:.1f} µs; VW example text "
        f"{fc['example_text_us_with_content']:.1f} µs with content vs "
        f"{fc['example_text_us_without_content']:.1f} µs without; VW predict "
        f"{fc['predict_us_with_content']:.1f} µs vs {fc['predict_us_without_content']:.1f} µs.",
        "",
        "### Baselines",
        "",
        _table(singles, strong),
        "",
        "### Best model per eval name (train split), per price of a dollar",
        "",
        _table(result["per_eval"], strong),
        "",
        "### Lambda sweep (offline replay: same warm start, same online protocol, in process)",
        "",
        _table(result["learned"], strong),
        "",
        "The same without the content namespace (no `prompt` sent):",
        "",
        _table(result["learned_no_content"], strong),
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
        f"### RouteLLM-style threshold router (strong {result['strong']}, weak {result['weak']})",
        "",
        _table(result["routellm"], strong),
        "",
    ]
    return parts


def _verdict(name: str, point: dict[str, Any], strong: dict[str, Any]) -> str:
    """The issue's accuracy-at-cost target, met or missed, for ``point``."""
    goal = ACCURACY_TARGETS.get(name, strong["accuracy"])
    cost_cap = COST_TARGETS[name] * strong["cost"]
    acc_ok, cost_ok = point["accuracy"] >= goal, point["cost"] <= cost_cap
    share = point["cost"] / strong["cost"]
    return (
        f"Target (accuracy >= {100 * goal:.1f}% at <= ${cost_cap:.3f} = "
        f"{100 * COST_TARGETS[name]:.0f}% of {strong['name']}'s cost, online): "
        f"**{'met' if acc_ok and cost_ok else 'missed'}**: {100 * point['accuracy']:.1f}% "
        f"({'+' if point['accuracy'] >= goal else ''}{100 * (point['accuracy'] - goal):.1f} "
        f"points) for ${point['cost']:.3f} ({100 * share:.1f}% of its cost)."
    )


def _aiq_verdict(aiq: dict[str, Any]) -> str:
    """The AIQ targets: above the mixtures and RouteLLM-style; the headline: not below the rule."""
    learned = aiq["learned (replay sweep)"]
    others = ("single models (mixtures)", "routellm")
    above = all(learned > aiq[k] for k in others)
    rule = aiq["per-eval rule"]
    return (
        f"Target (learned AIQ above the single-model mixture and the RouteLLM-style router): "
        f"**{'met' if above else 'missed'}**: "
        + ", ".join(f"{learned - aiq[k]:+.4f} vs {k}" for k in others)
        + f". Headline (not below the per-eval rule): **{'met' if learned >= rule else 'missed'}**"
        f": {learned - rule:+.4f}."
    )


PROTOCOL = """\
- Data: `bench/data/` (see its PROVENANCE.md). RouterBench rows with a null `correct` are
  dropped, and then every prompt that lacks an outcome for some model (so 945 test prompts, not
  952). MMLU-Pro: 7 priced models, a seeded sample of 4,000 train and 2,000 test questions. The
  prompt texts are in `bench/data/prompts.parquet` (MMLU-Pro: question and options).
- The catalog the router gets holds exactly the data set's models (`BUDGET_ROUTER_CATALOG_PATH`),
  tiers as in `bench/data/datasets.py`. Outcomes always report `cost_dollars` = the data's real
  cost of the chosen model; catalog prices serve the router's estimates and reservations.
- Features: the router's own (`router_service.features`): step type (eval name), prompt tokens,
  context `eval=<name>`, each model's id, tier and estimated cost, and the prompt's content
  (word uni- and bigrams of its last 1,000 characters hashed into {buckets} buckets, L2-normalised
  counts, VW namespace `w`, crossed with the model namespace).
- Warm start: logged bandit feedback on the train split, not full information: a uniform
  logging policy logs each train prompt {rounds} times (a fresh seeded order per round), and
  only the logged model's outcome is learned, with its propensity 1/K. Reward
  `correct - lambda x cost / total_dollars` (the learner's formula); VW `--cb_explore_adf
  {learning}`, exploration {exploration}. The model is passed to router and learner as
  `BUDGET_ROUTER_POLICY_MODEL_PATH` / `BUDGET_ROUTER_LEARNER_MODEL_PATH`.
- The price of a dollar: the spend target per task is the issue's share of the strong model's
  mean train cost; lambda is its dual price, found on the train split alone (warm start on 70%,
  online replay on 30%, the smallest lambda of the grid whose spend per task meets the target).
  Live, the learner's allocator moves lambda by projected subgradient steps (step {step}) on
  each closed task's spend share against the target (`BUDGET_ROUTER_LEARNER_LAMBDA_INITIAL`,
  `_LAMBDA_STEP`, `_SPEND_TARGET_RATIO`).
- Live: `bench/stack.py` starts `budget-router up` (broker + learner + router on one data dir).
  Per test prompt, in a seeded order: `POST /v1/tasks` (trust domain `bench`, budget
  ${task}, no reserves), `POST /v1/decide` (kind `execution`, type = eval name, input tokens =
  1.3 x prompt words, context `eval=<name>`, `prompt` = the prompt's text), `POST /v1/outcomes`
  for the chosen model only (success = quality = correct), `POST /v1/tasks/{{id}}/close`. The
  learner learns from that partial feedback (propensity floor {floor}) and the router
  hot-swaps its snapshots.
- Replay: the same warm start and online protocol in process (no HTTP, no governor: budgets are
  generous so the governor never acts here, no snapshot lag), with lambda fixed per point for
  the sweep (lambda 0, then 0.25 to 16 in steps of sqrt(2)), and with the allocator moving it
  for the "target (replay)" point. `--replay-only` runs this part alone. Random is the
  expectation of a uniform choice. The oracle takes the cheapest correct model per prompt (the
  cheapest model when none is correct). The per-eval rule picks, per eval name, the model with
  the best mean train reward at each lambda (lambda 0: the most accurate per eval).
"""

NOTES = f"""\
- Content features are n-grams of the prompt hashed into {CONTENT_BUCKETS} buckets, crossed with
  the model ids. With one weight per distinct n-gram and model, a few thousand logged outcomes
  taught the model the train prompts rather than anything that carries over (the learned AIQ
  fell below the no-content one); {CONTENT_BUCKETS} shared buckets carry a little signal and cost
  a fraction to build and score (variants: routing_quality_variants.md). On these data sets
  the per-prompt differences between models that the oracle exploits (e.g. which of two
  readings a cheap model happens to get right on Winogrande) are mostly not predictable from
  the words (a full-information logistic regression on them, cross-validated on the train split,
  barely beats a constant per eval), so most of the achievable gain is per eval name.
- Online updates use the floored propensity of the chosen model; exploration (epsilon
  {EXPLORATION.epsilon}) spends a share of the prompts on random models, which costs accuracy
  and money in every online point (compare the warm start's greedy choice).
- The RouteLLM-style baseline uses a per-(eval, prompt-length quartile) win rate, not a trained
  prompt classifier, so it is a weak stand-in for RouteLLM proper.
"""


if __name__ == "__main__":
    main()
