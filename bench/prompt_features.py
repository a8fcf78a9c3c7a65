"""What the prompt features cost per decision: hashed n-grams and the local embedding.

``python -m bench.prompt_features [--repeat 15]`` times, on the benchmark data sets' test
prompts, in one process and interleaved: ``content_features``, the prompt embedding at each
of its dimensions (the first pass over the prompts fills the word cache, then warm passes)
and the whole shared + action features as VW text with VW's predict, with and without the
embedding. The fastest pass is reported (the machine is shared). Prints markdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from bench.data.datasets import RoutingDataset, datasets_named, report_by_dataset
from bench.routing_quality import EXPLORATION, LEARNING, Features
from learner.vw_model import VWPolicyModel, example_lines
from router_service.features import content_features
from router_service.prompt_embedding import EMBEDDING_DIMS, PromptEmbedder


def fastest_us(call: Callable[[str], object], prompts: list[str], repeat: int) -> float:
    """The fastest of ``repeat`` passes over ``prompts``, in microseconds per prompt."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for prompt in prompts:
            call(prompt)
        best = min(best, time.perf_counter() - started)
    return best / len(prompts) * 1e6


def one_pass_us(call: Callable[[str], object], prompts: list[str]) -> float:
    return fastest_us(call, prompts, 1)


def decision_us(features: Features, repeat: int) -> tuple[float, float]:
    """Microseconds per test prompt: all features and their VW text; VW predict on it."""
    test = features.dataset.test
    tokens = features.dataset.input_tokens(test)
    rows = range(len(test))
    model = VWPolicyModel.create(EXPLORATION, 0, LEARNING)
    build, predict = float("inf"), float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        examples = [features._build(test, r, int(tokens[r])) for r in rows]
        for shared, actions in examples:
            example_lines(shared, actions)
        build = min(build, time.perf_counter() - started)
        started = time.perf_counter()
        for shared, actions in examples:
            model.predict(shared, actions)
        predict = min(predict, time.perf_counter() - started)
    model.close()
    return build / len(test) * 1e6, predict / len(test) * 1e6


def measure(dataset: RoutingDataset, repeat: int) -> list[str]:
    prompts = list(dataset.test.prompts)
    rows = [f"| content_features | {fastest_us(content_features, prompts, repeat):.1f} µs |"]
    for dims in EMBEDDING_DIMS:
        embedder = PromptEmbedder.wordllama(dims)
        cold = one_pass_us(embedder.features, prompts)
        warm = fastest_us(embedder.features, prompts, repeat)
        rows.append(f"| embedding, {dims} dims: first pass / warm | {cold:.1f} / {warm:.1f} µs |")
    for label, embedder in (("without", None), ("with", PromptEmbedder.wordllama(64))):
        features = Features(dataset, content=True, embedder=embedder)
        decision_us(features, 1)  # fills the word cache
        build, predict = decision_us(features, repeat)
        rows.append(f"| all features + VW text, {label} the 64-dim embedding | {build:.1f} µs |")
        rows.append(f"| VW predict, {label} the 64-dim embedding | {predict:.1f} µs |")
    mean_chars = sum(len(p) for p in prompts) / len(prompts)
    return [
        f"{dataset.name}: {len(prompts)} test prompts, mean {mean_chars:,.0f} characters, "
        f"{len(dataset.test.models)} candidate models.",
        "",
        "| per decision | fastest pass |",
        "|---|---|",
        *rows,
        "",
    ]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.prompt_features", description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--datasets", default="routerbench,mmlu_pro")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command = f"python -m bench.prompt_features --repeat {args.repeat} --datasets {args.datasets}"
    names = datasets_named(parser, args.datasets)
    return report_by_dataset(command, names, lambda data: measure(data, args.repeat))


if __name__ == "__main__":
    main()
