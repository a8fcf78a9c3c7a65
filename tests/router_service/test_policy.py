"""Contract tests every exploration algorithm's policy must pass."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from learner.vw_model import ExplorationSpec, VWPolicyModel, namespace_text
from router_service.catalog import Catalog
from router_service.features import action_features, shared_features
from router_service.policy import RoutingPolicy
from router_service.prior import train_prior
from router_service.schemas import Signals, Step
from router_service.settings import DEFAULT_TIER_PREFERENCES

SPECS = [
    ExplorationSpec("epsilon", epsilon=0.2),
    ExplorationSpec("softmax", softmax_lambda=5.0),
    ExplorationSpec("squarecb", squarecb_gamma_scale=10.0),
]
MODELS = list(Catalog.from_file(None).snapshot().values())


def features(kind: str = "control", kind_type: str = "planning") -> tuple:
    step = Step(kind=kind, type=kind_type, input_tokens=3000, expected_output_tokens=400)
    shared = shared_features(
        step, Signals(), trust_domain="d", task_type="t", tags={}, context={"lang": "en"}
    )
    actions = [action_features(m, m.token_cost(3000, 400)) for m in MODELS]
    return shared, actions


def make_policy(spec: ExplorationSpec, seed: int = 3) -> RoutingPolicy:
    model = train_prior(MODELS, DEFAULT_TIER_PREFERENCES, spec, examples_per_kind=5, seed=seed)
    return RoutingPolicy(model, "test", spec, seed)


@pytest.fixture(params=SPECS, ids=lambda s: s.algorithm)
def spec(request: pytest.FixtureRequest) -> ExplorationSpec:
    return request.param


def test_pmf_sums_to_one_and_propensity_is_the_chosen_probability(spec: ExplorationSpec) -> None:
    policy = make_policy(spec)
    for kind, kind_type in [("control", "planning"), ("presentation", "format")]:
        choice = policy.choose(*features(kind, kind_type))
        assert sum(choice.pmf) == pytest.approx(1.0, abs=1e-6)
        assert len(choice.pmf) == len(MODELS)
        assert choice.propensity == choice.pmf[choice.index] > 0


def test_epsilon_greedy_respects_its_exploration_floor() -> None:
    spec = SPECS[0]
    pmf = make_policy(spec).choose(*features()).pmf
    assert min(pmf) >= spec.epsilon / len(MODELS) - 1e-6


def test_every_algorithm_keeps_exploring(spec: ExplorationSpec) -> None:
    pmf = make_policy(spec).choose(*features()).pmf
    assert min(pmf) > 0
    assert max(pmf) < 1


def test_same_seed_gives_same_decisions(spec: ExplorationSpec) -> None:
    first, second = make_policy(spec, seed=11), make_policy(spec, seed=11)
    run_a = [first.choose(*features()).index for _ in range(200)]
    run_b = [second.choose(*features()).index for _ in range(200)]
    assert run_a == run_b
    assert len(set(run_a)) > 1, "exploration never left the greedy action in 200 draws"


def test_save_load_round_trip_keeps_every_prediction(spec: ExplorationSpec, tmp_path: Path) -> None:
    model = make_policy(spec).model
    path = tmp_path / "model.vw"
    model.save(path)
    loaded = VWPolicyModel.load(path)
    for kind, kind_type in [("control", "planning"), ("execution", "extraction")]:
        assert loaded.predict(*features(kind, kind_type)) == model.predict(
            *features(kind, kind_type)
        )
    restored = VWPolicyModel.from_bytes(model.to_bytes())
    assert restored.predict(*features()) == model.predict(*features())


def test_learning_moves_probability_to_the_rewarded_model() -> None:
    spec = ExplorationSpec("epsilon", epsilon=0.1)
    policy = make_policy(spec)
    shared, actions = features("execution", "extraction")
    cheap = next(i for i, m in enumerate(MODELS) if m.id == "gpt-5-nano")
    assert max(range(len(MODELS)), key=policy.model.predict(shared, actions).__getitem__) != cheap
    for _ in range(100):
        for index in range(len(MODELS)):
            policy.model.learn(shared, actions, index, -1.0 if index == cheap else 0.0, 1.0)
    pmf = policy.model.predict(shared, actions)
    assert max(range(len(pmf)), key=pmf.__getitem__) == cheap


def test_the_pmf_within_a_subset_is_what_predicting_the_subset_gives() -> None:
    """Epsilon-greedy over a subset follows from the scores (ties share the best's mass)."""
    rng = random.Random(0)
    compared = 0
    for trial in range(30):
        epsilon = rng.choice([0.01, 0.05, 0.2])
        model = VWPolicyModel.create(
            ExplorationSpec(epsilon=epsilon), seed=trial, learning="--cb_type mtr -l 0.05"
        )
        # The router's setting may differ from what the model was built with: the model wins.
        policy = RoutingPolicy(model, "v", ExplorationSpec(epsilon=0.1), seed=trial)
        size = rng.randint(2, 14)
        actions = [
            {"model": {"id": f"m{i}", "tier": rng.choice("ab")}, "cost": {"usd": rng.random()}}
            for i in range(size)
        ]
        for _ in range(rng.choice([0, 5, 200])):  # 0: a fresh model, every score tied
            shared = {"step": {"type": rng.choice("xy")}}
            model.learn(shared, actions, rng.randrange(size), -rng.random(), 1 / size)
        for _ in range(10):
            shared_text = namespace_text({"step": {"type": rng.choice("xy"), "n": rng.random()}})
            texts = [namespace_text(a) for a in actions]
            subset = sorted(rng.sample(range(size), rng.randint(1, size)))
            within = policy.pmf_within(policy.preference_text(shared_text, texts), subset)
            predicted = policy.pmf_text(shared_text, [texts[i] for i in subset])
            assert within == pytest.approx(predicted, abs=1e-6)
            compared += 1
    assert compared == 300


@pytest.mark.parametrize("algorithm", ["softmax", "squarecb"])
def test_other_exploration_needs_a_prediction_of_its_own(algorithm: str) -> None:
    spec = ExplorationSpec(algorithm=algorithm)  # type: ignore[arg-type]
    policy = RoutingPolicy(VWPolicyModel.create(spec), "v", spec, seed=0)
    actions = [namespace_text({"model": {"id": f"m{i}"}}) for i in range(3)]
    preference = policy.preference_text(namespace_text({"step": {"type": "x"}}), actions)
    assert policy.pmf_within(preference, [0, 2]) is None
