import numpy as np
import pytest

from learner.ope import (
    Estimate,
    EvaluationError,
    MeanOutcomeModel,
    direct_values,
    doubly_robust,
    effective_sample_size,
    ips,
    low_ess_warnings,
    snips,
)

# A synthetic bandit with known truth: 3 context groups, 4 actions, Bernoulli rewards.
MU = np.array([[0.2, 0.5, 0.7, 0.4], [0.9, 0.3, 0.1, 0.6], [0.5, 0.5, 0.8, 0.2]])
LOGGING = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
TARGET = np.array([[0.0, 0.1, 0.9, 0.0], [0.8, 0.0, 0.0, 0.2], [0.1, 0.1, 0.7, 0.1]])
TRUTH = float(np.mean(np.sum(TARGET * MU, axis=1)))  # contexts are uniform


def draw(seed: int, n: int = 2000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=n)
    a = np.array([rng.choice(4, p=LOGGING[g]) for g in x])
    return {
        "x": x,
        "a": a,
        "p": LOGGING[x, a],
        "t": TARGET[x, a],
        "y": (rng.random(n) < MU[x, a]).astype(float),
    }


def perfect_dr(d: dict[str, np.ndarray]) -> Estimate:
    direct = direct_values(TARGET[d["x"]], MU[d["x"]])
    return doubly_robust(d["p"], d["t"], d["y"], direct, MU[d["x"], d["a"]])


def test_ips_snips_dr_cover_the_truth_in_most_seeded_runs() -> None:
    runs = [draw(seed) for seed in range(20)]
    coverage = {
        "ips": np.mean([ips(d["p"], d["t"], d["y"]).contains(TRUTH) for d in runs]),
        "snips": np.mean([snips(d["p"], d["t"], d["y"]).contains(TRUTH) for d in runs]),
        "dr": np.mean([perfect_dr(d).contains(TRUTH) for d in runs]),
    }
    assert all(c >= 0.8 for c in coverage.values()), coverage
    mean_ips = np.mean([ips(d["p"], d["t"], d["y"]).value for d in runs])
    assert mean_ips == pytest.approx(TRUTH, abs=0.01)


def test_snips_equals_ips_when_weights_average_one() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.1, 0.6, size=500)
    w = rng.uniform(0.5, 1.5, size=500)
    w /= w.mean()
    y = rng.random(500)
    assert snips(p, p * w, y).value == pytest.approx(ips(p, p * w, y).value, rel=1e-9)


def test_dr_with_a_perfect_reward_model_has_lower_variance_than_ips() -> None:
    runs = [draw(seed) for seed in range(20)]
    ips_values = [ips(d["p"], d["t"], d["y"]).value for d in runs]
    dr_estimates = [perfect_dr(d) for d in runs]
    assert np.std([e.value for e in dr_estimates]) < 0.7 * np.std(ips_values)
    widths = [(e.ci_high - e.ci_low) for e in dr_estimates]
    ips_widths = [(e.ci_high - e.ci_low) for e in (ips(d["p"], d["t"], d["y"]) for d in runs)]
    assert max(widths) < min(ips_widths)


def test_snips_bootstrap_is_seeded_and_close_to_the_delta_method() -> None:
    d = draw(5)
    first = snips(d["p"], d["t"], d["y"], bootstrap=300, seed=1)
    again = snips(d["p"], d["t"], d["y"], bootstrap=300, seed=1)
    delta = snips(d["p"], d["t"], d["y"])
    assert first == again
    assert first.ci_low == pytest.approx(delta.ci_low, abs=0.01)
    assert first.ci_high == pytest.approx(delta.ci_high, abs=0.01)


def test_effective_sample_size() -> None:
    assert effective_sample_size(np.ones(50)) == pytest.approx(50)
    assert effective_sample_size([0, 0, 7, 0]) == pytest.approx(1)
    assert effective_sample_size(np.zeros(5)) == 0
    assert ips([0.5, 0.5], [1.0, 0.0], [1.0, 1.0]).ess == pytest.approx(1)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([0.0, 0.5], [1, 1], [1, 1]), {}, "propensities must be in"),
        (([0.5, 1.2], [1, 1], [1, 1]), {}, "propensities must be in"),
        (([0.5, 0.5], [1.5, 1], [1, 1]), {}, "target_probs must be in"),
        (([0.5, 0.5], [1, 1], [1, 1, 1]), {}, "outcomes has 3 entries, expected 2"),
        (([0.5, 0.5], [1, 1], [np.nan, 1]), {}, "outcomes must be finite"),
        (([0.5, 0.5], [1, 1], [1, 1]), {"alpha": 1.5}, "alpha must be in"),
        (([], [], []), {}, "0 samples"),
    ],
)
def test_invalid_inputs_are_named(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        ips(*args, **kwargs)


def test_snips_is_undefined_when_the_target_never_agrees() -> None:
    estimate = snips([0.5, 0.5], [0.0, 0.0], [1.0, 0.0])
    assert np.isnan(estimate.value)
    assert estimate.to_dict()["value"] is None


def test_mean_outcome_model_shrinks_rare_cells_towards_the_action_mean() -> None:
    actions = ["a"] * 10 + ["b"] * 10 + ["a"]
    groups = ["x"] * 20 + ["y"]
    outcomes = [1.0] * 10 + [0.0] * 10 + [0.0]
    model = MeanOutcomeModel(shrinkage=4).fit(actions, groups, outcomes)
    action_a = (10 + 4 * (10 / 21)) / (11 + 4)
    assert model.predict("a", "y") == pytest.approx((0 + 4 * action_a) / (1 + 4))
    assert model.predict("a", "unseen") == pytest.approx(action_a)
    assert model.predict("unseen", "x") == pytest.approx(10 / 21)
    assert model.predict("b", "x") < 0.2
    with pytest.raises(EvaluationError, match="shrinkage must be >= 0"):
        MeanOutcomeModel(shrinkage=-1)


def test_low_ess_warnings() -> None:
    assert low_ess_warnings(np.ones(1000)) == []
    rare = np.zeros(1000)
    rare[:5] = 200.0
    found = low_ess_warnings(rare, label="always x")
    assert any("effective sample size 5.0 of 1000" in w for w in found)
    assert any("one decision carries 20.0%" in w for w in found)
    assert "never plays" in low_ess_warnings(np.ones(1000), unsupported_mass=0.3)[0]
    assert "never agrees" in low_ess_warnings(np.zeros(10))[0]
