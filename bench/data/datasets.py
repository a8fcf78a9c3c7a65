"""The benchmark data sets: full-information outcome tables and the catalogs that price them.

Each :class:`RoutingDataset` holds a train and a test :class:`BenchmarkTable` (per prompt and
model: correct in [0, 1] and the real cost in dollars), the catalog entries the router gets for
its models (ids as in the data, tiers by our judgment, prices per million tokens) and the
strong/weak pair of the RouteLLM-style baseline.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from bench import code_version, machine_facts
from learner.benchmark_data import (
    ROUTERBENCH_TIERS,
    TOKENS_PER_WORD,
    BenchmarkTable,
    load_routerbench,
)

DATA_DIR = Path(__file__).resolve().parent
PROMPTS_PATH = DATA_DIR / "prompts.parquet"
MMLU_PRO_TIERS: dict[str, str] = {
    "gpt4o@2024-05-20": "frontier",
    "Meta-Llama-3_1-70B-Instruct_5shots": "large",
    "jamba-1.5-large_5shots": "large",
    "deepseek@2024-05-20": "large",
    "Mixtral-8x7B-Instruct-v0.1_5shots": "medium",
    "Meta-Llama-3_1-8B-Instruct_5shots": "small",
    "Mistral-7B-Instruct-v0.2_5shots": "small",
}


@dataclass(frozen=True)
class RoutingDataset:
    """One benchmark: tables, catalog entries and the baseline's strong and weak models."""

    name: str
    train: BenchmarkTable
    test: BenchmarkTable
    catalog: list[dict[str, Any]]
    strong: str
    weak: str
    expected_output_tokens: int
    pricing: str

    def input_tokens(self, table: BenchmarkTable) -> np.ndarray:
        """Prompt tokens, estimated as 1.3 x the prompt's words."""
        return np.maximum(1, np.round(TOKENS_PER_WORD * table.prompt_words)).astype(np.int64)


def _tier(tiers: dict[str, str], model: str) -> str:
    if model not in tiers:
        raise KeyError(f"no tier for model {model!r}; expected one of {sorted(tiers)}")
    return tiers[model]


def routerbench(path: Path = DATA_DIR / "routerbench.parquet") -> RoutingDataset:
    """RouterBench (ARC, Winogrande, MBPP; 0-shot), priced by a blended per-token fit.

    The data has per-call costs but no token counts, so each model gets one price per token
    (input = output) fitted on the train split: its total cost over its total estimated tokens
    (1.3 x prompt words + 200 expected output tokens). Outcomes report the data's real cost.
    """
    train, test = (
        with_prompts(load_routerbench(path, split), "routerbench") for split in ("train", "test")
    )
    out = 200
    tokens = float(np.sum(np.round(TOKENS_PER_WORD * train.prompt_words) + out))
    catalog = []
    for j, model in enumerate(train.models):
        price = float(train.cost[:, j].sum()) / tokens * 1e6
        catalog.append(_entry(model, _tier(ROUTERBENCH_TIERS, model), price, price))
    return RoutingDataset(
        name="routerbench",
        train=train,
        test=test,
        catalog=catalog,
        strong="gpt-4-1106-preview",
        weak="zero-one-ai/Yi-34B-Chat",
        expected_output_tokens=out,
        pricing="blended per-token price per model fitted to the train split's real costs",
    )


def mmlu_pro(
    path: Path = DATA_DIR / "mmlu_pro.parquet",
    prices_path: Path = DATA_DIR / "mmlu_pro_prices.json",
) -> RoutingDataset:
    """MMLU-Pro (5-shot CoT outputs), costs from LiteLLM prices (see PROVENANCE.md)."""
    prices = json.loads(prices_path.read_text())
    tables = [with_prompts(_mmlu_table(path, split), "mmlu_pro") for split in ("train", "test")]
    catalog = [
        _entry(
            model,
            _tier(MMLU_PRO_TIERS, model),
            prices[model]["input_cost_per_token"] * 1e6,
            prices[model]["output_cost_per_token"] * 1e6,
        )
        for model in tables[0].models
    ]
    return RoutingDataset(
        name="mmlu_pro",
        train=tables[0],
        test=tables[1],
        catalog=catalog,
        strong="gpt4o@2024-05-20",
        weak="Meta-Llama-3_1-70B-Instruct_5shots",
        expected_output_tokens=300,
        pricing="LiteLLM list prices per input/output token (catalog = the prices of the data)",
    )


LOADERS: dict[str, Callable[[], RoutingDataset]] = {
    "routerbench": routerbench,
    "mmlu_pro": mmlu_pro,
}


def datasets_named(parser: argparse.ArgumentParser, names: str) -> list[str]:
    """The names in ``--datasets`` (comma-separated); a parser error for one not in LOADERS."""
    chosen = names.split(",")
    unknown = [n for n in chosen if n not in LOADERS]
    if unknown:
        parser.error(f"--datasets: unknown {unknown}; expected names from {sorted(LOADERS)}")
    return chosen


def report_by_dataset(
    command: str, names: list[str], measure: Callable[[RoutingDataset], list[str]]
) -> str:
    """Markdown: the command, code and machine, then ``measure``'s lines per data set; printed."""
    facts = ", ".join(f"{k} {v}" for k, v in machine_facts().items())
    lines = [f"`{command}`, code {code_version()}, {facts}.", ""]
    for name in names:
        lines += measure(LOADERS[name]())
    text = "\n".join(lines)
    print(text)
    return text


def _mmlu_table(path: Path, split: str) -> BenchmarkTable:
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT prompt_id, eval_name, prompt_words, model, correct, cost_usd "
            "FROM read_parquet(?) WHERE split = ? ORDER BY prompt_id, model",
            [str(path), split],
        ).fetchall()
    models = sorted({r[3] for r in rows})
    ids = sorted({r[0] for r in rows})
    index = {p: i for i, p in enumerate(ids)}
    correct = np.zeros((len(ids), len(models)))
    cost = np.zeros((len(ids), len(models)))
    meta: dict[str, tuple[str, int]] = {}
    for prompt_id, eval_name, words, model, ok, dollars in rows:
        i, j = index[prompt_id], models.index(model)
        correct[i, j], cost[i, j] = ok, dollars
        meta[prompt_id] = (eval_name, words)
    words = np.array([meta[p][1] for p in ids], dtype=np.float64)
    return BenchmarkTable(
        prompt_ids=ids,
        eval_names=[meta[p][0] for p in ids],
        prompt_chars=words * 6,
        prompt_words=words,
        models=models,
        correct=correct,
        cost=cost,
    )


def with_prompts(table: BenchmarkTable, dataset: str, path: Path = PROMPTS_PATH) -> BenchmarkTable:
    """``table`` with each row's prompt text from ``prompts.parquet``."""
    with duckdb.connect() as con:
        texts = dict(
            con.execute(
                "SELECT prompt_id, prompt FROM read_parquet(?) WHERE dataset = ?",
                [str(path), dataset],
            ).fetchall()
        )
    missing = [p for p in table.prompt_ids if p not in texts]
    if missing:
        raise KeyError(f"{len(missing)} prompts of {dataset} have no text, e.g. {missing[0]!r}")
    return replace(table, prompts=[texts[p] for p in table.prompt_ids])


def _entry(model: str, tier: str, input_price: float, output_price: float) -> dict[str, Any]:
    return {
        "id": model,
        "provider": model.split("/")[0] if "/" in model else "benchmark",
        "tier": tier,
        "input_price_per_mtok": round(input_price, 6),
        "output_price_per_mtok": round(output_price, 6),
        "context_window": 200_000,
    }
