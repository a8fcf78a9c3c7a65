"""The promotion gate: its rules as tables, and maybe_promote against a real MLflow store."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from learner.model_bundle import ModelBundle
from learner.ope import Estimate
from learner.promotion import (
    GateConfig,
    GateDecision,
    PolicyEstimate,
    evaluate_gate,
    maybe_promote,
)
from learner.registry import CHAMPION, ModelRegistry
from learner.vw_model import ExplorationSpec, VWPolicyModel

CONFIG = GateConfig(enabled=True, quality_tolerance=0.02, min_ess=100.0, max_spend_ratio=0.9)
CHAMP = PolicyEstimate(0.70, 0.66, 0.74, spend_per_task=0.40, mean_cap=1.0, ess=900.0)


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


def test_a_good_candidate_passes_with_one_reason_per_rule() -> None:
    decision = evaluate_gate(estimate(), CHAMP, CONFIG)
    assert decision.passed
    assert [r.split(":")[0] for r in decision.reasons] == ["pass quality", "pass spend", "pass ess"]


@pytest.mark.parametrize(
    ("overrides", "failed"),
    [
        # lower bound 0.67 < 0.70 - 0.02: the point estimate alone would have passed
        ({"quality_ci_low": 0.67}, "FAIL quality: candidate lower bound 0.67 < champion 0.7"),
        ({"spend_per_task": 0.95}, "FAIL spend: 0.95 per task > 0.9 x mean cap 1 = 0.9"),
        ({"ess": 99.0}, "FAIL ess: 99 < minimum 100"),
    ],
)
def test_each_rule_can_fail_on_its_own(overrides: dict[str, float], failed: str) -> None:
    decision = evaluate_gate(estimate(**overrides), CHAMP, CONFIG)
    assert not decision.passed
    [failure] = [r for r in decision.reasons if r.startswith("FAIL")]
    assert failure.startswith(failed)


def test_the_first_promotion_skips_the_quality_rule() -> None:
    decision = evaluate_gate(estimate(quality_ci_low=0.0), None, CONFIG)
    assert decision.passed
    assert decision.reasons[0] == "pass quality: no champion to compare with (first promotion)"


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


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"quality_tolerance": -0.1}, "quality_tolerance must be >= 0"),
        ({"min_ess": float("inf")}, "min_ess must be >= 0"),
        ({"max_spend_ratio": 0.0}, "max_spend_ratio must be > 0"),
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
    decision = evaluate_gate(estimate(ess=10.0), CHAMP, CONFIG)
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
def test_a_passed_gate_promotes_with_its_reasons(
    registry: ModelRegistry, versions: list[str]
) -> None:
    decision = evaluate_gate(estimate(), CHAMP, CONFIG)
    assert maybe_promote(registry, versions[1], decision, CONFIG)
    assert registry.get_alias_version(CHAMPION) == versions[1]
    move = registry.history()[-1]
    assert (move.action, move.actor, move.to_version) == ("promote", "promotion-gate", versions[1])
    assert move.reason == "gate passed: " + "; ".join(decision.reasons)
    assert registry.version_tags(versions[1])["gate.outcome"] == "promoted"
