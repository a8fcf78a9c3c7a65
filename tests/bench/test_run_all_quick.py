"""The summary page of ``bench.run_all`` from the parts' JSON results, and its argument checks.

Running the three quick modes here would take well over a minute (each has its own quick test
in this folder), so this test reuses the per-part JSON committed in ``docs/benchmarks/`` and
checks the summary writer and ``main``'s ``--reuse`` path on them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import REPO_ROOT, BenchError
from bench.run_all import PARTS, main

COMMITTED = REPO_ROOT / "docs" / "benchmarks"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output folder holding copies of the committed per-part results."""
    (tmp_path / "benchmarks").mkdir()
    for part in PARTS:
        shutil.copy(COMMITTED / f"{part.stem}.json", tmp_path / "benchmarks")
    return tmp_path


def test_summary_from_reused_parts_has_every_headline_and_link(out: Path) -> None:
    summary = main(["--out", str(out), "--reuse", ",".join(p.name for p in PARTS)])
    text = (out / "benchmarks.md").read_text()
    for part in PARTS:
        assert f"## {part.title}" in text
        assert f"(benchmarks/{part.stem}.md)" in text
        assert summary["parts"][part.name]["reused"]
    assert (
        "(results file reused, not rerun here)" in text
        and "- Machine: " in text
        and "PROVENANCE.md" in text
    )
    assert "learned router, live through the service" in text
    assert "| learned router |" in text
    assert "| decision p99 at 200/s (ms) |" in text
    saved = json.loads((out / "benchmarks.json").read_text())
    assert saved["parts"].keys() == {p.name for p in PARTS}
    targets = saved["parts"]["service_perf"]["headline"]["targets"]
    assert {t["target"] for t in targets} >= {"learner events/s (steady)"}


def test_reuse_rejects_unknown_parts_and_missing_results(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="unknown parts"):
        main(["--out", str(tmp_path), "--reuse", "nonsense"])
    with pytest.raises(BenchError, match="does not exist"):
        main(["--out", str(tmp_path), "--reuse", ",".join(p.name for p in PARTS)])
