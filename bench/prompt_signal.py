"""How much a prompt feature could help routing at best: full information, no bandit.

``python -m bench.prompt_signal [--datasets routerbench,mmlu_pro]``: per eval name and model,
an L2-regularised logistic regression of "correct" on the prompt's features, fitted on every
model's outcome for every train prompt (what the per-eval rule sees, and more than a bandit
ever does); the test split is routed by predicted accuracy minus lambda x the model's mean
train cost for the eval, lambda swept as for the rule. Its AIQ against the per-eval rule's is
an upper bound on what the feature can add to the learned router. Prints markdown.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from bench.data.datasets import RoutingDataset, datasets_named, report_by_dataset
from bench.routing_quality import TASK_DOLLARS, aiq, baselines, per_eval_curve, score
from router_service.features import CONTENT_BUCKETS, content_features
from router_service.prompt_embedding import EMBEDDING_DIMS, PromptEmbedder

PENALTIES = (1.0, 10.0, 100.0)  # L2 penalty per weight, for a mean log loss per prompt x n


def fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    """Weights (bias last) minimising the log loss plus ``penalty`` x the squared weights."""
    design = np.hstack([x, np.ones((len(x), 1))])

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ w
        p = 1.0 / (1.0 + np.exp(-z))
        value = np.sum(np.logaddexp(0.0, z) - y * z) + penalty * w[:-1] @ w[:-1]
        grad = design.T @ (p - y)
        grad[:-1] += 2 * penalty * w[:-1]
        return float(value), grad

    return minimize(loss, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B").x


def predicted_accuracy(
    dataset: RoutingDataset, train_x: np.ndarray, test_x: np.ndarray, penalty: float
) -> np.ndarray:
    """Per test prompt and model, the fitted probability of a correct answer."""
    train, test = dataset.train, dataset.test
    train_evals, test_evals = np.array(train.eval_names), np.array(test.eval_names)
    predicted = np.zeros(test.correct.shape)
    for name in sorted(set(test_evals)):
        fit, use = train_evals == name, test_evals == name
        for j in range(len(test.models)):
            y = (train.correct[fit, j] >= 0.5).astype(float)
            w = fit_logistic(train_x[fit], y, penalty)
            predicted[use, j] = 1.0 / (1.0 + np.exp(-(test_x[use] @ w[:-1] + w[-1])))
    return predicted


def routed_aiq(
    dataset: RoutingDataset, predicted: np.ndarray, rows: list[int], frame: Frame
) -> float:
    """AIQ of routing by ``predicted`` - lambda x mean train cost per (eval, model)."""
    train, test = dataset.train, dataset.test
    train_evals = np.array(train.eval_names)
    mean_cost = {e: train.cost[train_evals == e].mean(0) for e in set(test.eval_names)}
    points = [frame.cheapest]
    for lam in (0.0, *np.geomspace(0.05, 64, 40)):
        chosen = [
            int(np.argmax(predicted[r] - lam * mean_cost[test.eval_names[r]] / TASK_DOLLARS))
            for r in rows
        ]
        point = score("", test, rows, chosen)
        points.append((point.cost, point.accuracy))
    return aiq(points, frame.low, frame.high)


@dataclass(frozen=True)
class Frame:
    """The AIQ's cost range (the single models') and its floor (the cheapest model)."""

    cheapest: tuple[float, float]
    low: float
    high: float

    @classmethod
    def of(cls, dataset: RoutingDataset, rows: list[int]) -> Frame:
        singles = baselines(dataset, rows)[: len(dataset.test.models)]
        points = [(p.cost, p.accuracy) for p in singles]
        return cls(min(points), min(c for c, _ in points), max(c for c, _ in points))


def length_matrix(prompts: list[str]) -> np.ndarray:
    return np.array([[np.log1p(len(p.split())) / 10] for p in prompts])


def ngram_matrix(prompts: list[str]) -> np.ndarray:
    rows = np.zeros((len(prompts), CONTENT_BUCKETS))
    for i, prompt in enumerate(prompts):
        for name, value in content_features(prompt).items():
            rows[i, int(name[1:])] = value
    return rows


def embedding_matrix(dims: int) -> Callable[[list[str]], np.ndarray]:
    embedder = PromptEmbedder.wordllama(dims)
    zero = np.zeros(dims)
    return lambda prompts: np.array([_or(embedder.embed(p), zero) for p in prompts])


def _or(vector: np.ndarray | None, default: np.ndarray) -> np.ndarray:
    return default if vector is None else vector


def measure(dataset: RoutingDataset, seed: int) -> list[str]:
    rows = list(range(len(dataset.test)))
    random.Random(seed).shuffle(rows)
    frame = Frame.of(dataset, rows)
    rule = [frame.cheapest, *[(p.cost, p.accuracy) for p in per_eval_curve(dataset, rows)]]
    rule_aiq = aiq(rule, frame.low, frame.high)
    features = {"prompt length (log words)": length_matrix, "hashed n-grams": ngram_matrix}
    features |= {f"wordllama, {d} dims": embedding_matrix(d) for d in EMBEDDING_DIMS}
    lines = [
        f"{dataset.name}: per-eval rule AIQ {rule_aiq:.4f}.",
        "",
        "| prompt feature | " + " | ".join(f"AIQ, penalty {p:g}" for p in PENALTIES) + " |",
        "|---|" + "---|" * len(PENALTIES),
    ]
    for name, build in features.items():
        train_x, test_x = build(list(dataset.train.prompts)), build(list(dataset.test.prompts))
        scores = [
            routed_aiq(dataset, predicted_accuracy(dataset, train_x, test_x, p), rows, frame)
            for p in PENALTIES
        ]
        lines.append(f"| {name} | " + " | ".join(f"{s:.4f}" for s in scores) + " |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.prompt_signal", description=__doc__)
    parser.add_argument("--datasets", default="routerbench,mmlu_pro")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command = f"python -m bench.prompt_signal --datasets {args.datasets}"
    names = datasets_named(parser, args.datasets)
    return report_by_dataset(command, names, lambda data: measure(data, args.seed))


if __name__ == "__main__":
    main()
