"""Full-information benchmark data (RouterBench) and logged bandit data simulated from it.

RouterBench scored every model on every prompt, so the value of any routing policy on it is
known exactly. Simulating a logging policy over it yields ``LoggedStep`` records together with
the full-information table, and off-policy estimates can be checked against the truth.
See /work/shared/data/PROVENANCE.md for where the file comes from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
from numpy.typing import NDArray

from feature_store.logged import LoggedStep
from learner.ope import EvaluationError

# A step kind per RouterBench task so replay can break results down by kind: ARC is
# multi-step science reasoning (control), MBPP writes code (execution) and Winogrande
# checks which reading of a sentence holds (verification). A labelling, not a claim.
EVAL_STEP_KINDS: dict[str, str] = {
    "arc-challenge": "control",
    "mbpp": "execution",
    "winogrande": "verification",
}
_COLUMNS = "prompt_id, eval_name, split, prompt_chars, prompt_words, model, correct, cost_usd"
# The raw file keys prompts by sample_id, but a few sample_ids carry two prompts.
_RAW_SELECT = """
    SELECT sample_id || ':' || left(md5(prompt), 8) AS prompt_id, eval_name, split,
           length(prompt) AS prompt_chars, len(string_split(prompt, ' ')) AS prompt_words,
           model, correct, cost_usd
    FROM read_parquet(?) WHERE correct IS NOT NULL
"""
_COMPACT_SELECT = f"SELECT {_COLUMNS} FROM read_parquet(?) WHERE correct IS NOT NULL"


TOKENS_PER_WORD = 1.3
# Tiers are a judgment from each model's size and price class at the time of the data.
ROUTERBENCH_TIERS: dict[str, str] = {
    "gpt-4-1106-preview": "frontier",
    "claude-v2": "large",
    "claude-v1": "large",
    "meta/llama-2-70b-chat": "large",
    "zero-one-ai/Yi-34B-Chat": "medium",
    "mistralai/mixtral-8x7b-chat": "medium",
    "gpt-3.5-turbo-1106": "medium",
    "claude-instant-v1": "medium",
    "meta/code-llama-instruct-34b-chat": "medium",
    "mistralai/mistral-7b-chat": "small",
    "WizardLM/WizardLM-13B-V1.2": "small",
}


@dataclass(frozen=True)
class BenchmarkTable:
    """Per prompt (rows) and model (columns): correctness in [0, 1] and cost in dollars.

    ``prompts`` holds each row's prompt text when the source has it (else it is empty).
    """

    prompt_ids: list[str]
    eval_names: list[str]
    prompt_chars: NDArray[np.float64]
    prompt_words: NDArray[np.float64]
    models: list[str]
    correct: NDArray[np.float64]
    cost: NDArray[np.float64]
    prompts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def model_index(self, model: str) -> int:
        if model not in self.models:
            raise EvaluationError(f"model {model!r} is not in the benchmark; have {self.models}")
        return self.models.index(model)


@dataclass(frozen=True)
class SimulatedLog:
    """Logged steps and, per decision_id, every model's (quality, cost) on that prompt."""

    steps: list[LoggedStep]
    full_info: dict[str, dict[str, tuple[float, float]]]


def load_routerbench(path: Path, split: str | None = None) -> BenchmarkTable:
    """Read the long RouterBench file (raw, or compact from :func:`export_compact`) wide.

    Rows with a null ``correct`` are dropped, then every prompt that lacks an outcome for
    some model, so that each row is full information.
    """
    if not path.is_file():
        raise EvaluationError(f"benchmark file {path} does not exist")
    with duckdb.connect() as con:
        columns = {
            row[0]
            for row in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
        }
        query = _RAW_SELECT if "prompt" in columns else _COMPACT_SELECT
        params: list[str] = [str(path)]
        if split is not None:
            query += " AND split = ?"
            params.append(split)
        rows = con.execute(f"{query} ORDER BY prompt_id, model", params).fetchall()
    if not rows:
        raise EvaluationError(f"no rows in {path} for split {split!r}")
    models = sorted({row[5] for row in rows})
    by_prompt: dict[str, dict[str, tuple[float, float]]] = {}
    meta: dict[str, tuple[str, int, int]] = {}
    for prompt_id, eval_name, _, chars, words, model, correct, cost in rows:
        by_prompt.setdefault(prompt_id, {})[model] = (float(correct), float(cost))
        meta[prompt_id] = (eval_name, chars, words)
    complete = [p for p in sorted(by_prompt) if len(by_prompt[p]) == len(models)]
    return BenchmarkTable(
        prompt_ids=complete,
        eval_names=[meta[p][0] for p in complete],
        prompt_chars=np.array([meta[p][1] for p in complete], dtype=np.float64),
        prompt_words=np.array([meta[p][2] for p in complete], dtype=np.float64),
        models=models,
        correct=np.array([[by_prompt[p][m][0] for m in models] for p in complete]),
        cost=np.array([[by_prompt[p][m][1] for m in models] for p in complete]),
    )


def export_compact(source: Path, target: Path, split: str | None = None) -> None:
    """Write a small copy (prompt lengths, no prompt texts) that :func:`load_routerbench` reads."""
    where, params = (
        ("", [str(source)]) if split is None else (" AND split = ?", [str(source), split])
    )
    quoted = str(target).replace("'", "''")
    with duckdb.connect() as con:
        con.execute(
            f"COPY ({_RAW_SELECT}{where} ORDER BY prompt_id, model) TO '{quoted}' "
            "(FORMAT parquet, COMPRESSION zstd)",
            params,
        )


def _shared_features(
    table: BenchmarkTable, row: int, kind: str
) -> dict[str, dict[str, float | str | bool]]:
    return {
        "task": {"eval": table.eval_names[row]},
        "step": {
            "kind": kind,
            "log_chars": math.log1p(table.prompt_chars[row]) / 10,
            "log_words": math.log1p(table.prompt_words[row]) / 10,
        },
    }


def simulate_logged(
    table: BenchmarkTable,
    *,
    n_steps: int,
    seed: int,
    favourite: str | None = None,
    epsilon: float = 1.0,
    trust_domains: Sequence[str] = ("benchmark",),
    step_kinds: Mapping[str, str] = EVAL_STEP_KINDS,
) -> SimulatedLog:
    """Draw prompts with replacement and log an epsilon-greedy choice around ``favourite``.

    ``epsilon=1`` (or no favourite) is the uniform policy. The estimated cost shown to a
    policy is the model's mean dollars per prompt character times the prompt's length; the
    logged cost and quality are the benchmark's real ones. Each step gets a trust domain
    drawn uniformly from ``trust_domains``.
    """
    if n_steps < 1:
        raise EvaluationError(f"n_steps must be >= 1, got {n_steps}")
    if not 0 <= epsilon <= 1:
        raise EvaluationError(f"epsilon must be in [0, 1], got {epsilon}")
    k = len(table.models)
    pmf = np.full(k, 1.0 / k)
    if favourite is not None:
        pmf = np.full(k, epsilon / k)
        pmf[table.model_index(favourite)] += 1 - epsilon
    elif epsilon < 1:
        raise EvaluationError("epsilon < 1 needs a favourite model")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(table), size=n_steps)
    chosen = rng.choice(k, size=n_steps, p=pmf)
    domains = rng.integers(0, len(trust_domains), size=n_steps)
    per_char = table.cost.sum(axis=0) / table.prompt_chars.sum()
    steps: list[LoggedStep] = []
    full_info: dict[str, dict[str, tuple[float, float]]] = {}
    for i, (row, action) in enumerate(zip(rows.tolist(), chosen.tolist(), strict=True)):
        decision_id = f"sim-{seed}-{i}"
        eval_name = table.eval_names[row]
        kind = step_kinds.get(eval_name, "execution")
        estimated = [float(c * table.prompt_chars[row]) for c in per_char]
        steps.append(
            LoggedStep(
                decision_id=decision_id,
                task_id=f"{table.prompt_ids[row]}#{i}",
                trust_domain=trust_domains[domains[i]],
                step_kind=kind,
                step_type=eval_name,
                policy_version=f"sim-eps{epsilon:g}-{favourite or 'uniform'}",
                actions=list(table.models),
                pmf=pmf.tolist(),
                chosen_index=action,
                propensity=float(pmf[action]),
                shared_features=_shared_features(table, row, kind),
                action_features=[
                    {"model": {"id": m}, "cost": {"log_cost": math.log10(c + 1e-6) / 6}}
                    for m, c in zip(table.models, estimated, strict=True)
                ],
                estimated_costs=[*estimated],
                success=bool(table.correct[row, action] >= 0.5),
                quality=float(table.correct[row, action]),
                cost_dollars=float(table.cost[row, action]),
            )
        )
        full_info[decision_id] = {
            m: (float(table.correct[row, j]), float(table.cost[row, j]))
            for j, m in enumerate(table.models)
        }
    return SimulatedLog(steps, full_info)
