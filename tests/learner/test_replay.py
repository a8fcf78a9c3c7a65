import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from feature_store.logged import LoggedStep
from learner.benchmark_data import (
    BenchmarkTable,
    SimulatedLog,
    export_compact,
    load_routerbench,
    simulate_logged,
)
from learner.ope import EvaluationError
from learner.replay import (
    CandidatePolicy,
    EpsilonGreedyCandidate,
    FixedModelCandidate,
    StepKindRuleCandidate,
    VWFileCandidate,
    replay,
)
from learner.vw_model import ExplorationSpec, VWPolicyModel

FIXTURE = Path(__file__).parents[1] / "data" / "routerbench_test.parquet"
SHARED = Path("/work/shared/data/routerbench_subset.parquet")
GPT4, MIXTRAL, YI, GPT35 = (
    "gpt-4-1106-preview",
    "mistralai/mixtral-8x7b-chat",
    "zero-one-ai/Yi-34B-Chat",
    "gpt-3.5-turbo-1106",
)
RULE = {"control": YI, "execution": GPT35, "verification": GPT4}
LAM = 20.0


@pytest.fixture(scope="module")
def table() -> BenchmarkTable:
    return load_routerbench(FIXTURE)


@pytest.fixture(scope="module")
def uniform_log(table: BenchmarkTable) -> SimulatedLog:
    return simulate_logged(table, n_steps=3000, seed=0, trust_domains=("eng", "legal"))


def candidates() -> list[CandidatePolicy]:
    return [FixedModelCandidate(GPT4), FixedModelCandidate(MIXTRAL), StepKindRuleCandidate(RULE)]


def test_loader_reads_the_compact_fixture_wide(table: BenchmarkTable) -> None:
    assert len(table) == 945 and len(table.models) == 11
    assert table.correct.shape == table.cost.shape == (945, 11)
    assert set(table.eval_names) == {"arc-challenge", "mbpp", "winogrande"}
    assert table.correct[:, table.model_index(GPT4)].mean() == pytest.approx(0.879, abs=0.001)
    assert table.cost[:, table.model_index(GPT4)].sum() == pytest.approx(4.73, abs=0.01)
    with pytest.raises(EvaluationError, match="model 'gpt-5' is not in the benchmark"):
        table.model_index("gpt-5")


@pytest.mark.skipif(not SHARED.is_file(), reason="shared benchmark data not present")
def test_raw_file_and_compact_export_agree(tmp_path: Path, table: BenchmarkTable) -> None:
    raw = load_routerbench(SHARED, split="test")
    export_compact(SHARED, tmp_path / "compact.parquet", split="test")
    compact = load_routerbench(tmp_path / "compact.parquet")
    assert raw.prompt_ids == compact.prompt_ids == table.prompt_ids
    np.testing.assert_array_equal(raw.correct, compact.correct)
    np.testing.assert_array_equal(raw.cost, table.cost)


def test_simulated_log_is_consistent_with_its_full_information(uniform_log: SimulatedLog) -> None:
    for step in uniform_log.steps[:200]:
        assert step.propensity == pytest.approx(1 / 11)
        assert sum(step.pmf) == pytest.approx(1)
        quality, cost = uniform_log.full_info[step.decision_id][step.model]
        assert (step.quality, step.cost_dollars) == (quality, cost)
    assert {s.trust_domain for s in uniform_log.steps} == {"eng", "legal"}


def test_estimates_cover_the_exact_counterfactual(table: BenchmarkTable) -> None:
    """Across 8 seeded logs x 3 candidates x 3 outcomes, each 95% interval covers the truth."""
    hits: dict[str, list[bool]] = {"ips": [], "snips": [], "dr": []}
    for seed in range(8):
        log = simulate_logged(table, n_steps=3000, seed=seed)
        for candidate in candidates():
            report = replay(log.steps, candidate, LAM, full_info=log.full_info)
            for outcome in report.overall.outcomes.values():
                assert outcome.exact is not None
                for name, found in hits.items():
                    found.append(getattr(outcome, name).contains(outcome.exact))
    coverage = {name: float(np.mean(found)) for name, found in hits.items()}
    assert all(c >= 0.85 for c in coverage.values()), coverage


def test_seeded_sample_estimates_are_close_to_the_truth(uniform_log: SimulatedLog) -> None:
    for candidate in candidates():
        report = replay(uniform_log.steps, candidate, LAM, full_info=uniform_log.full_info)
        quality, cost = report.overall.outcomes["quality"], report.overall.outcomes["cost"]
        assert quality.exact is not None and cost.exact is not None
        assert report.warnings == []
        for name in ("snips", "dr"):
            assert abs(getattr(quality, name).value - quality.exact) < 0.05, candidate.name
            assert abs(getattr(cost, name).value - cost.exact) < 0.1 * cost.exact, candidate.name
        assert cost.dr.contains(cost.exact) and quality.dr.contains(quality.exact)


def test_low_ess_warning_fires_where_logging_rarely_explored(table: BenchmarkTable) -> None:
    log = simulate_logged(table, n_steps=3000, seed=1, favourite=MIXTRAL, epsilon=0.05)
    rare = replay(log.steps, FixedModelCandidate(GPT4), LAM, full_info=log.full_info)
    assert any("effective sample size" in w for w in rare.warnings), rare.warnings
    assert rare.overall.ess < 30
    common = replay(log.steps, FixedModelCandidate(MIXTRAL), LAM, full_info=log.full_info)
    assert common.warnings == []
    greedy = simulate_logged(table, n_steps=200, seed=1, favourite=MIXTRAL, epsilon=0.0)
    unsupported = replay(greedy.steps, FixedModelCandidate(GPT4), LAM)
    assert "never agrees" in unsupported.warnings[0]


def test_report_text_and_json_have_domain_and_kind_sections(uniform_log: SimulatedLog) -> None:
    report = replay(uniform_log.steps, StepKindRuleCandidate(RULE), LAM)
    text = report.to_text()
    for heading in ("== Per trust domain ==", "-- domain eng", "-- domain legal"):
        assert heading in text
    for heading in ("== Per step kind ==", "-- kind control", "-- kind execution"):
        assert heading in text
    assert "exact" not in text
    data = json.loads(report.to_json())
    assert set(data["by_domain"]) == {"eng", "legal"}
    assert set(data["by_kind"]) == {"control", "execution", "verification"}
    assert data["by_kind"]["execution"]["n"] == sum(
        s.step_kind == "execution" for s in uniform_log.steps
    )
    assert set(data["overall"]["outcomes"]["cost"]) == {"ips", "snips", "dr", "logged", "exact"}


def test_chart_png_and_hand_written_svg(
    tmp_path: Path, uniform_log: SimulatedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = uniform_log.steps[:500]
    report = replay(steps, FixedModelCandidate(GPT4), LAM, full_info=uniform_log.full_info)
    svg = report.save_chart(tmp_path / "chart.svg")
    assert svg.read_text().startswith("<svg") and "quality" in svg.read_text()
    png = report.save_chart(tmp_path / "chart.png")
    assert png.suffix in {".png", ".svg"}
    if png.suffix == ".png":
        assert png.read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    fallback = report.save_chart(tmp_path / "nompl.png")
    assert fallback == tmp_path / "nompl.svg"
    assert fallback.read_text().rstrip().endswith("</svg>")


def test_progress_is_reported(uniform_log: SimulatedLog) -> None:
    calls: list[tuple[int, int]] = []
    replay(
        uniform_log.steps[:250], FixedModelCandidate(GPT4), LAM, progress=lambda *c: calls.append(c)
    )
    assert calls[-1] == (250, 250)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_vw_file_candidate_replays_a_trained_model(
    tmp_path: Path, table: BenchmarkTable, uniform_log: SimulatedLog
) -> None:
    model = VWPolicyModel.create(ExplorationSpec(epsilon=0.1), seed=3)
    for step in uniform_log.steps:
        reward = step.quality - LAM * step.cost_dollars
        model.learn(
            step.shared_features, step.action_features, step.chosen_index, -reward, step.propensity
        )
    model.save(tmp_path / "model.vw")
    model.close()
    fresh = simulate_logged(table, n_steps=3000, seed=7)
    candidate = VWFileCandidate(tmp_path / "model.vw")
    report = replay(fresh.steps, candidate, LAM, full_info=fresh.full_info)
    reward = report.overall.outcomes["reward"]
    assert reward.exact is not None
    # Within ~3 standard errors (1.5 x the 95% half-width) of the truth.
    assert abs(reward.dr.value - reward.exact) <= 1.5 * (reward.dr.ci_high - reward.dr.value)
    assert reward.exact > reward.logged.ci_high  # learning beat the uniform logging policy


def test_epsilon_greedy_candidate_spreads_its_exploration(uniform_log: SimulatedLog) -> None:
    step = uniform_log.steps[0]
    pmf = EpsilonGreedyCandidate(FixedModelCandidate(GPT4), 0.22).pmf(step)
    assert sum(pmf) == pytest.approx(1)
    assert pmf[step.actions.index(GPT4)] == pytest.approx(0.78 + 0.02)


class _BrokenCandidate:
    name = "broken"

    def pmf(self, step: LoggedStep) -> list[float]:
        return [1.0]


@pytest.mark.parametrize(
    ("candidate", "full_info", "match"),
    [
        (_BrokenCandidate(), None, "broken gave 1 probabilities for decision 'sim-0-0'"),
        (FixedModelCandidate("gpt-5"), None, "model 'gpt-5' is not an action of decision"),
        (StepKindRuleCandidate({"control": GPT4}), None, "no model for step kind"),
        (FixedModelCandidate(GPT4), {}, "full_info for decision 'sim-0-0' lacks outcomes"),
    ],
)
def test_replay_errors_name_the_problem(
    uniform_log: SimulatedLog, candidate: CandidatePolicy, full_info: dict | None, match: str
) -> None:
    steps = [replace(s, step_kind="execution") for s in uniform_log.steps[:5]]
    with pytest.raises(EvaluationError, match=match):
        replay(steps, candidate, LAM, full_info=full_info)
