"""The agent-workload benchmark end to end in quick mode: completes, never overspends."""

from __future__ import annotations

import json
from pathlib import Path

from bench.agent_sim import main as run_agent_sim
from bench.agent_sim import success_rates

SECTIONS = ("## Setup", "## Results", "### By budget level", "## Verdict", "- Command: `")


def test_quick_run_completes_with_zero_overshoot_and_no_http_errors(tmp_path: Path) -> None:
    document = run_agent_sim(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "agent_workload.md").read_text()
    for section in SECTIONS:
        assert section in text
    assert "Quick mode" in text
    assert json.loads((tmp_path / "agent_workload.json").read_text())["meta"]["quick"]
    assert (tmp_path / "agent_workload.png").stat().st_size > 0
    assert len(document["policies"]) == 5
    for summary in document["policies"].values():
        assert summary["http_errors"] == 0
        assert summary["overshoot_tasks"] == 0
        for task in summary["tasks_detail"]:
            assert task["spent"] <= task["budget"] + 1e-9


def test_success_rates_cover_every_tier_and_kind() -> None:
    rates = success_rates()
    assert set(rates) == {"small", "medium", "large", "frontier"}
    for kinds in rates.values():
        assert set(kinds) == {
            "control",
            "execution",
            "verification",
            "presentation",
            "final_synthesis",
        }
        assert all(0 < p < 1 for p in kinds.values())
