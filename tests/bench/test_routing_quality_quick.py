"""The routing-quality benchmark end to end in quick mode, and its frontier arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.routing_quality import aiq, frontier_value, main

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


def test_frontier_mixes_points_and_is_zero_below_the_cheapest() -> None:
    points = [(1.0, 0.5), (3.0, 0.9)]
    assert frontier_value(points, 0.5) == 0.0
    assert frontier_value(points, 2.0) == pytest.approx(0.7)
    assert frontier_value(points, 5.0) == pytest.approx(0.9)
    assert aiq(points, 1.0, 3.0) == pytest.approx(0.7, abs=1e-3)
