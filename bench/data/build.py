"""Rebuild the small benchmark data copies in ``bench/data/`` from ``/work/shared/data``.

``python bench/data/build.py [--source DIR]``; see ``bench/data/PROVENANCE.md`` for what each
file holds and where it comes from. Deterministic: the same source gives the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from learner.benchmark_data import export_compact  # noqa: E402

# MMLU-Pro model -> the LiteLLM price entry used for it (gemini-1.5 has no entry: left out).
MMLU_PRO_PRICES: dict[str, str] = {
    "gpt4o@2024-05-20": "gpt-4o-2024-05-13",
    "deepseek@2024-05-20": "deepseek-chat",
    "jamba-1.5-large_5shots": "jamba-1.5-large",
    "Meta-Llama-3_1-70B-Instruct_5shots": (
        "together_ai/meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo"
    ),
    "Meta-Llama-3_1-8B-Instruct_5shots": "together_ai/meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
    "Mixtral-8x7B-Instruct-v0.1_5shots": "together_ai/mistralai/Mixtral-8x7B-Instruct-v0.1",
    "Mistral-7B-Instruct-v0.2_5shots": "mistral.mistral-7b-instruct-v0:2",
}
MMLU_TRAIN, MMLU_TEST = 4_000, 2_000
TOKENS_PER_WORD = 1.3


def build_routerbench(source: Path) -> None:
    export_compact(source / "routerbench_subset.parquet", HERE / "routerbench.parquet")


def build_mmlu_pro(source: Path) -> None:
    """Outcomes of the priced models on a seeded sample of questions, with real-price costs."""
    prices = json.loads((source / "model_prices.json").read_text())
    rows = [
        (model, key, prices[key]["input_cost_per_token"], prices[key]["output_cost_per_token"])
        for model, key in MMLU_PRO_PRICES.items()
    ]
    with duckdb.connect() as con:
        con.execute("CREATE TABLE price(model VARCHAR, price_key VARCHAR, pin DOUBLE, pout DOUBLE)")
        con.executemany("INSERT INTO price VALUES (?, ?, ?, ?)", rows)
        outcomes, questions = (
            str(source / f) for f in ("mmlu_pro_outcomes.parquet", "mmlu_pro_questions.parquet")
        )
        target = str(HERE / "mmlu_pro.parquet").replace("'", "''")
        con.execute(
            f"""
            COPY (
              WITH q AS (
                SELECT question_id, category,
                       len(string_split(question || ' ' || array_to_string(options, ' '), ' '))
                         AS prompt_words
                FROM read_parquet('{questions}')),
              complete AS (
                SELECT question_id FROM read_parquet('{outcomes}')
                WHERE model IN (SELECT model FROM price)
                GROUP BY question_id HAVING count(DISTINCT model) = {len(rows)}),
              picked AS (
                SELECT question_id, row_number() OVER (ORDER BY hash(question_id || ':seed0'))
                         AS r
                FROM complete)
              SELECT o.question_id AS prompt_id, q.category AS eval_name,
                     CASE WHEN p.r <= {MMLU_TEST} THEN 'test' ELSE 'train' END AS split,
                     q.prompt_words, o.model, o.correct::DOUBLE AS correct,
                     o.output_words,
                     round({TOKENS_PER_WORD} * q.prompt_words) * price.pin
                       + round({TOKENS_PER_WORD} * o.output_words) * price.pout AS cost_usd
              FROM read_parquet('{outcomes}') o
              JOIN picked p USING (question_id)
              JOIN q USING (question_id)
              JOIN price USING (model)
              WHERE p.r <= {MMLU_TEST + MMLU_TRAIN}
              ORDER BY prompt_id, model)
            TO '{target}' (FORMAT parquet, COMPRESSION zstd)
            """
        )


def build_prompts(source: Path) -> None:
    """The prompt text of every RouterBench prompt and MMLU-Pro question the tables hold."""
    target = str(HERE / "prompts.parquet").replace("'", "''")
    routerbench, questions = (
        str(source / f) for f in ("routerbench_subset.parquet", "mmlu_pro_questions.parquet")
    )
    mmlu = str(HERE / "mmlu_pro.parquet").replace("'", "''")
    with duckdb.connect() as con:
        con.execute(
            f"""
            COPY (
              SELECT DISTINCT 'routerbench' AS dataset,
                     sample_id || ':' || left(md5(prompt), 8) AS prompt_id, prompt
              FROM read_parquet('{routerbench}') WHERE correct IS NOT NULL
              UNION ALL
              SELECT 'mmlu_pro', q.question_id,
                     q.question || chr(10) || array_to_string(q.options, chr(10))
              FROM read_parquet('{questions}') q
              WHERE q.question_id IN (SELECT DISTINCT prompt_id FROM read_parquet('{mmlu}'))
              ORDER BY dataset, prompt_id)
            TO '{target}' (FORMAT parquet, COMPRESSION zstd)
            """
        )


def build_agent_steps(source: Path) -> None:
    """Per-step token counts of the real agent traces, with the action's command word."""
    traces = str(source / "agent_step_traces.parquet")
    runs = str(source / "agent_step_traces_runs.csv")
    target = str(HERE / "agent_steps.parquet").replace("'", "''")
    with duckdb.connect() as con:
        con.execute(
            f"""
            COPY (
              SELECT t.run || '/' || t.instance_id AS trajectory, t.step, t.model,
                     t.prompt_tokens, t.completion_tokens,
                     coalesce(t.reasoning_tokens, 0)::BIGINT AS reasoning_tokens,
                     t.cached_tokens, t.cost,
                     regexp_extract(t.action, '^\\["\\s*([A-Za-z0-9_#.-]+)', 1) AS command,
                     r.resolved
              FROM read_parquet('{traces}') t
              LEFT JOIN read_csv('{runs}') r USING (run, instance_id)
              ORDER BY trajectory, step)
            TO '{target}' (FORMAT parquet, COMPRESSION zstd)
            """
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=Path("/work/shared/data"))
    args = parser.parse_args(argv)
    build_routerbench(args.source)
    build_mmlu_pro(args.source)
    build_prompts(args.source)
    build_agent_steps(args.source)
    for path in sorted(HERE.glob("*.parquet")):
        print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
