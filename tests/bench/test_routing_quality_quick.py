"""The routing-quality benchmark end to end in quick mode, and its frontier arithmetic."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.routing_quality import _aiq_verdict, aiq, frontier_value, main, results_stem

SECTIONS = (
    "## Protocol",
    "## Results: routerbench",
    "## Results: mmlu_pro",
    "### Online, through the service",
    "### Baselines",
    "### Lambda sweep",
    "### At matched cost",
    "### Best model per eval name",
    "### Feature building on the hot path",
    "### Area under the cost-accuracy frontier (AIQ)",
    "- Command: `",
    "- Seed: ",
)


def test_quick_run_serves_every_prompt_without_http_errors(tmp_path: Path) -> None:
    document = main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "routing_quality.md").read_text()
    for section in SECTIONS:
        assert section in text
    assert "Quick mode" in text
    assert json.loads((tmp_path / "routing_quality.json").read_text())["meta"]["quick"]
    assert (tmp_path / "routing_quality_routerbench.png").stat().st_size > 0
    live = document["datasets"][0]["live"]
    assert live is not None
    assert live["detail"]["http_errors"] == {}
    assert live["detail"]["learner"]["learned_steps"] == document["datasets"][0]["test_prompts"]
    names = [p["name"] for p in document["datasets"][0]["singles"]]
    assert "oracle" in names and "gpt-4-1106-preview" in names


def test_quick_run_with_the_prompt_embedding_serves_it_live(tmp_path: Path) -> None:
    pytest.importorskip("wordllama")
    document = main(["--quick", "--prompt-embedding", "64", "--out", str(tmp_path)])
    assert document["meta"]["prompt_embedding_dims"] == 64
    assert (
        "- Prompt embedding: wordllama, 64 dimensions"
        in (tmp_path / "routing_quality.md").read_text()
    )
    live = document["datasets"][0]["live"]
    assert live["detail"]["http_errors"] == {}
    assert live["detail"]["learner"]["learned_steps"] == document["datasets"][0]["test_prompts"]


def test_frontier_mixes_points_and_is_zero_below_the_cheapest() -> None:
    points = [(1.0, 0.5), (3.0, 0.9)]
    assert frontier_value(points, 0.5) == 0.0
    assert frontier_value(points, 2.0) == pytest.approx(0.7)
    assert frontier_value(points, 5.0) == pytest.approx(0.9)
    assert aiq(points, 1.0, 3.0) == pytest.approx(0.7, abs=1e-3)


def test_replay_only_skips_the_stack_and_names_results_by_data_set(tmp_path: Path) -> None:
    document = main(["--quick", "--replay-only", "--datasets", "mmlu_pro", "--out", str(tmp_path)])
    result = document["datasets"][0]
    assert result["dataset"] == "mmlu_pro" and result["live"] is None
    assert result["dual_replay"]["cost"] > 0
    text = (tmp_path / "routing_quality_mmlu_pro.md").read_text()
    assert "Not run live (`--replay-only`)" in text
    assert not (tmp_path / "routing_quality.md").exists()


def test_results_stem_keeps_the_routerbench_name() -> None:
    assert results_stem(["routerbench"]) == "routing_quality"
    assert results_stem(["routerbench", "mmlu_pro"]) == "routing_quality"
    assert results_stem(["mmlu_pro"]) == "routing_quality_mmlu_pro"


@pytest.mark.parametrize(
    ("learned", "verdicts"),
    [(0.86, ["met", "met"]), (0.84, ["met", "missed"]), (0.80, ["missed", "missed"])],
)
def test_aiq_verdict_compares_with_the_baselines_and_the_rule(
    learned: float, verdicts: list[str]
) -> None:
    scores = {"single models (mixtures)": 0.82, "routellm": 0.83, "per-eval rule": 0.85}
    text = _aiq_verdict({**scores, "learned (replay sweep)": learned})
    assert re.findall(r"\*\*(met|missed)\*\*", text) == verdicts
