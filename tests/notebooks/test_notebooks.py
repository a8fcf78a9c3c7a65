"""Both analysis notebooks run top to bottom on a fresh data dir, in this virtualenv's Python."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = {
    "replay_analysis.ipynb": (
        ["replay_candidates.png", "replay_rule.png", "replay_summary.csv"],
        ["IPS quality", "SNIPS $/step", "would have spent about", "Replay of by step kind"],
    ),
    "cost_quality_frontier.ipynb": (
        ["frontier_routerbench.png", "frontier_logged.png", "frontier_logged.csv"],
        ["exact quality", "SNIPS quality", "rule λ=0", "945 prompts x 11 models"],
    ),
}


def _text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_notebook_is_clean_and_parameterised(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), (
        f"{name}: clear the outputs before committing"
    )
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "BUDGET_ROUTER_NOTEBOOK_DATA_DIR" in code[0].source
    assert notebook.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_on_an_empty_data_dir(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "var"
    monkeypatch.setenv("BUDGET_ROUTER_NOTEBOOK_DATA_DIR", str(data_dir))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(repr(sys.executable))"))
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell

    assert _text(notebook.cells[-1]).strip() == repr(sys.executable), "kernel not in this venv"
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    assert [o for o in outputs if o.output_type == "error"] == []
    files, phrases = EXPECTED[name]
    reports = data_dir / "reports"
    for file in files:
        assert (reports / file).stat().st_size > 0, f"{name} did not write {file}"
    text = "".join(_text(cell) for cell in notebook.cells)
    for phrase in phrases:
        assert phrase in text, f"{name}: no output contains {phrase!r}"
    assert "generating a seeded run" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "no chart was shown"
