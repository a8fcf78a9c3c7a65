"""The promotion gate: its rules as tables, the paired gain, and maybe_promote on real MLflow."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from learner.gate_evidence import paired_gain
from learner.model_bundle import ModelBundle
from learner.ope import Estimate
from learner.promotion import (
    Gain,
    GateConfig,
    GateDecision,
    GateEvidence,
    PolicyEstimate,
    evaluate_gate,
    gate_outcome,
    maybe_promote,
)
from learner.registry import CHAMPION, ModelRegistry, Pin
from learner.vw_model import ExplorationSpec, VWPolicyModel

CONFIG = GateConfig(
    enabled=True,
    quality_tolerance=0.02,
    min_ess=100.0,
    max_spend_ratio=0.9,
    margin=0.01,
    min_steps=300,
)
CHAMP = PolicyEstimate(0.70, 0.66, 0.74, spend_per_task=0.40, mean_cap=1.0, ess=900.0)
PIN = Pin("3", "alice", "incident 42", datetime(2026, 12, 1, tzinfo=UTC))


def estimate(**overrides: float) -> PolicyEstimate:
    values = {
        "quality": 0.72,
        "quality_ci_low": 0.69,
        "quality_ci_high": 0.75,
        "spend_per_task": 0.50,
        "mean_cap": 1.0,
        "ess": 400.0,
    }
    values.update(overrides)
    return PolicyEstimate(**values)


def evidence(
    n_steps: int = 1000,
    reward: tuple[float, float, float] = (0.05, 0.02, 0.08),
    quality: tuple[float, float, float] = (0.02, -0.01, 0.05),
    champion: PolicyEstimate | None = CHAMP,
    **candidate: float,
) -> GateEvidence:
    if champion is None:
        return GateEvidence(n_steps, estimate(**candidate))
    return GateEvidence(n_steps, estimate(**candidate), champion, Gain(*reward), Gain(*quality))


def failures(decision: GateDecision) -> list[str]:
    return [r for r in decision.reasons if r.startswith("FAIL")]


def test_a_clearly_better_candidate_passes_with_one_reason_per_rule() -> None:
    decision = evaluate_gate(evidence(), CONFIG)
    assert decision.passed
    rules = [r.split(":")[0] for r in decision.reasons]
    assert rules == ["pass samples", "pass ess", "pass reward", "pass quality", "pass spend"]


@pytest.mark.parametrize(
    ("lower_bound", "passed"),
    [(0.0101, True), (0.01, True), (0.0099, False), (-0.03, False)],
)
def test_the_reward_gains_lower_bound_must_reach_the_margin(
    lower_bound: float, passed: bool
) -> None:
    # The point gain (0.05) is five times the margin every time: only the bound decides.
    decision = evaluate_gate(evidence(reward=(0.05, lower_bound, 0.1)), CONFIG)
    assert decision.passed is passed
    if not passed:
        [failure] = failures(decision)
        assert failure.startswith("FAIL reward: gain over champion 0.05, 95% lower bound")
        assert failure.endswith("< margin 0.01")


@pytest.mark.parametrize(
    ("case", "failed"),
    [
        ({"n_steps": 299}, "FAIL samples: 299 logged steps < minimum 300"),
        (
            {"champion": PolicyEstimate(0.7, 0.6, 0.8, 0.4, 1.0, ess=99.0)},
            "FAIL ess: smaller of candidate and champion 99 < minimum 100",
        ),
        ({"ess": 50.0}, "FAIL ess: smaller of candidate and champion 50 < minimum 100"),
        ({"quality": (-0.02, -0.03, 0.0)}, "FAIL quality: gain over champion -0.02"),
        ({"spend_per_task": 0.95}, "FAIL spend: 0.95 per task > 0.9 x mean cap 1 = 0.9"),
    ],
)
def test_each_rule_can_fail_on_its_own(case: dict[str, object], failed: str) -> None:
    decision = evaluate_gate(evidence(**case), CONFIG)  # type: ignore[arg-type]
    assert not decision.passed
    [failure] = failures(decision)
    assert failure.startswith(failed)


def test_enough_samples_is_a_count_and_an_interval() -> None:
    """The same true gain passes on a large sample and fails on a small one although both are
    above ``min_steps``: the count alone is not enough, the interval must clear the margin."""
    rng = np.random.default_rng(7)
    config = GateConfig(min_steps=100, min_ess=0.0, margin=0.01)

    def gain_on(n: int) -> Gain:
        logged = rng.integers(0, 2, size=n)  # uniform logging over two actions
        propensity = np.full(n, 0.5)
        reward = np.where(logged == 1, rng.normal(0.6, 0.3, n), rng.normal(0.5, 0.3, n))
        candidate = np.where(logged == 1, 0.9, 0.1)  # mostly the better action
        champion = np.where(logged == 1, 0.1, 0.9)
        found = paired_gain(propensity, candidate, champion, reward, alpha=0.05)
        assert found is not None
        return found

    small, large = gain_on(150), gain_on(20_000)
    assert small.ci_high - small.ci_low > 5 * (large.ci_high - large.ci_low)
    assert large.ci_low > 0.05  # the true gain is 0.8 x 0.1 = 0.08
    for n, gain, passed in ((150, small, False), (20_000, large, True)):
        found = evidence(n_steps=n, reward=(gain.value, gain.ci_low, gain.ci_high))
        decision = evaluate_gate(found, config)
        assert decision.passed is passed, decision.reasons
        assert decision.reasons[0].startswith("pass samples")


def test_paired_gain_of_a_policy_with_itself_is_exactly_zero() -> None:
    rng = np.random.default_rng(3)
    probs = rng.uniform(0.1, 0.9, 500)
    gain = paired_gain(np.full(500, 0.5), probs, probs, rng.normal(0.5, 0.2, 500), 0.05)
    assert gain == Gain(0.0, 0.0, 0.0)


def test_paired_gain_without_agreement_has_no_estimate() -> None:
    ones = np.ones(10)
    assert paired_gain(ones * 0.5, np.zeros(10), ones, ones, 0.05) is None


def test_the_first_promotion_is_a_sanity_gate() -> None:
    decision = evaluate_gate(evidence(champion=None, quality_ci_low=0.0), CONFIG)
    assert decision.passed
    assert "pass reward: no champion to compare with (first promotion)" in decision.reasons
    too_few = evaluate_gate(evidence(n_steps=10, champion=None), CONFIG)
    assert failures(too_few) == ["FAIL samples: 10 logged steps < minimum 300"]
    unreliable = evaluate_gate(evidence(champion=None, ess=20.0), CONFIG)
    assert failures(unreliable) == ["FAIL ess: candidate 20 < minimum 100"]


@pytest.mark.parametrize(
    ("passed", "config", "pin", "outcome"),
    [
        (True, CONFIG, None, "promoted"),
        (False, CONFIG, None, "refused"),
        (True, GateConfig(enabled=False), None, "passed, gate disabled"),
        (True, CONFIG, PIN, "passed, champion pinned by alice"),
        (False, CONFIG, PIN, "refused"),
    ],
)
def test_only_a_passed_enabled_unpinned_gate_promotes(
    passed: bool, config: GateConfig, pin: Pin | None, outcome: str
) -> None:
    assert gate_outcome(GateDecision(passed, []), config, pin) == outcome


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"quality": float("nan")}, r"PolicyEstimate\.quality must be finite"),
        ({"quality_ci_low": 0.8}, "quality_ci_low <= quality <= quality_ci_high"),
        ({"mean_cap": 0.0}, r"PolicyEstimate\.mean_cap must be > 0"),
        ({"ess": -1.0}, "must be >= 0"),
    ],
)
def test_invalid_estimates_are_refused(overrides: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        estimate(**overrides)


def test_invalid_evidence_is_refused() -> None:
    with pytest.raises(ValueError, match="Gain needs ci_low <= value <= ci_high"):
        Gain(0.1, 0.2, 0.3)
    with pytest.raises(ValueError, match="needs reward_gain and quality_gain"):
        GateEvidence(500, estimate(), CHAMP)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"quality_tolerance": -0.1}, "quality_tolerance must be >= 0"),
        ({"min_ess": float("inf")}, "min_ess must be >= 0"),
        ({"max_spend_ratio": 0.0}, "max_spend_ratio must be > 0"),
        ({"margin": float("nan")}, "margin must be a finite number"),
        ({"min_steps": -1}, "min_steps must be >= 0"),
        ({"min_steps": 2.5}, "min_steps must be an integer"),
        ({"confidence": 1.0}, r"confidence must be in \(0, 1\)"),
    ],
)
def test_invalid_gate_configs_are_refused(overrides: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GateConfig(**overrides)  # type: ignore[arg-type]


def test_from_ope_takes_quality_ci_and_ess() -> None:
    ope = Estimate(value=0.7, ci_low=0.6, ci_high=0.8, n=1000, ess=321.0)
    assert PolicyEstimate.from_ope(ope, spend_per_task=0.3, mean_cap=0.5) == PolicyEstimate(
        0.7, 0.6, 0.8, 0.3, 0.5, 321.0
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    return ModelRegistry.embedded(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def versions(registry: ModelRegistry) -> list[str]:
    """Two registered versions, the first of them champion."""
    model = VWPolicyModel.create(ExplorationSpec(), seed=1)
    bundle = ModelBundle.from_model(model, ExplorationSpec(), allocator_state={"eng": 0.5})
    model.close()
    window = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 8, tzinfo=UTC))
    found = [registry.register(bundle, {"snips": 0.7}, {}, window, "gate-test") for _ in range(2)]
    registry.promote(found[0], "setup", "initial champion")
    return found


@pytest.mark.integration
def test_a_failed_gate_leaves_the_champion_and_records_why(
    registry: ModelRegistry, versions: list[str]
) -> None:
    champion = registry.get_alias_version(CHAMPION)
    decision = evaluate_gate(evidence(ess=10.0), CONFIG)
    assert not maybe_promote(registry, versions[1], decision, CONFIG)
    assert registry.get_alias_version(CHAMPION) == champion
    tags = registry.version_tags(versions[1])
    assert tags["gate.passed"] == "false"
    assert tags["gate.outcome"] == "refused"
    assert json.loads(tags["gate.reasons"]) == decision.reasons


@pytest.mark.integration
def test_a_disabled_gate_records_but_never_promotes(
    registry: ModelRegistry, versions: list[str]
) -> None:
    champion = registry.get_alias_version(CHAMPION)
    disabled = GateConfig(enabled=False)
    assert not maybe_promote(registry, versions[1], GateDecision(True, ["pass all"]), disabled)
    assert registry.get_alias_version(CHAMPION) == champion
    assert registry.version_tags(versions[1])["gate.outcome"] == "passed, gate disabled"


@pytest.mark.integration
def test_a_pinned_champion_is_not_moved_by_a_passed_gate(
    registry: ModelRegistry, versions: list[str]
) -> None:
    champion = registry.get_alias_version(CHAMPION)
    pin = registry.set_pin("alice", "incident 42")
    assert (pin.version, registry.pin()) == (champion, pin)
    try:
        decision = evaluate_gate(evidence(), CONFIG)
        assert decision.passed
        assert not maybe_promote(registry, versions[1], decision, CONFIG)
        assert registry.get_alias_version(CHAMPION) == champion
        tags = registry.version_tags(versions[1])
        assert tags["gate.outcome"] == "passed, champion pinned by alice"
    finally:
        registry.clear_pin("alice", "incident over")
    assert registry.pin() is None
    pins = [(m.action, m.actor, m.reason) for m in registry.history() if m.action.endswith("pin")]
    assert pins == [("pin", "alice", "incident 42"), ("unpin", "alice", "incident over")]
    assert registry.previous_champion() is None, "pin entries are not champion moves"


@pytest.mark.integration
def test_a_passed_gate_promotes_with_its_reasons(
    registry: ModelRegistry, versions: list[str]
) -> None:
    decision = evaluate_gate(evidence(), CONFIG)
    assert maybe_promote(registry, versions[1], decision, CONFIG)
    assert registry.get_alias_version(CHAMPION) == versions[1]
    move = registry.history()[-1]
    assert (move.action, move.actor, move.to_version) == ("promote", "promotion-gate", versions[1])
    assert move.reason == "gate passed: " + "; ".join(decision.reasons)
    assert registry.version_tags(versions[1])["gate.outcome"] == "promoted"
