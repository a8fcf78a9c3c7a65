"""Seeded learning test: a cheap model as good as the strong one for extraction only.

The simulated router logs decisions sampled from the day-one prior (built like the router
builds it, with more exploration) with real propensities; outcomes follow a fixed quality
table. After the stated number of events the learner's policy must send extraction to the
cheap model and keep planning on the strong one. Other learner tests reuse the simulator.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from learner.consumer import Record
from learner.service import Learner
from learner.settings import LearnerSettings
from learner.vw_model import VWPolicyModel
from router_service.catalog import Catalog, ModelSpec
from router_service.events import (
    AnyEvent,
    DecisionEvent,
    OutcomeEvent,
    TaskClosedEvent,
    encode_event,
)
from router_service.features import action_features, shared_features
from router_service.policy import RoutingPolicy, build_policy
from router_service.schemas import Signals, Step
from router_service.settings import Settings

STRONG, MEDIUM, CHEAP = "gpt-4.1", "gpt-4.1-mini", "gpt-5-nano"
CANDIDATES = (STRONG, MEDIUM, CHEAP)
QUALITY = {
    "planning": {STRONG: 0.9, MEDIUM: 0.6, CHEAP: 0.3},
    "extraction": {STRONG: 0.9, MEDIUM: 0.8, CHEAP: 0.9},
}
STEPS = (("control", "planning"), ("execution", "extraction"), ("execution", "extraction"))
TASK_DOLLARS = 0.05
START = datetime(2025, 1, 1, tzinfo=UTC)
EVENTS_TO_LEARN = 400 * (len(STEPS) * 2 + 1)  # 2,800 events in all


def router_settings() -> Settings:
    """The router's settings in these tests: a small prior that explores a third of the time."""
    return Settings(prior_examples_per_kind=10, seed=7, exploration={"epsilon": 0.3})


def catalog_models() -> dict[str, ModelSpec]:
    return Catalog.from_file(None).snapshot()


def prior_policy() -> RoutingPolicy:
    """The day-one policy exactly as the router builds it."""
    return build_policy(router_settings(), list(catalog_models().values()))


def step_context(kind: str, step_type: str, input_tokens: int, domain: str = "eng") -> tuple:
    """Shared and action features of one step over the candidates, as the router makes them."""
    models = catalog_models()
    step = Step(kind=kind, type=step_type, input_tokens=input_tokens, expected_output_tokens=300)  # type: ignore[arg-type]
    shared = shared_features(
        step, Signals(), trust_domain=domain, task_type="research", tags={}, context={}
    )
    costs = [models[m].token_cost(input_tokens, 300) for m in CANDIDATES]
    actions = [action_features(models[m], c) for m, c in zip(CANDIDATES, costs, strict=True)]
    return step, shared, actions, costs


def simulate(tasks: int, seed: int, policy: RoutingPolicy | None = None) -> Iterator[AnyEvent]:
    """Events of ``tasks`` simulated tasks: per step a decision and its outcome, then the close."""
    rng = random.Random(seed)
    policy = policy or prior_policy()
    for t in range(tasks):
        task_id = f"task-{seed}-{t}"
        at = START + timedelta(seconds=30 * t)
        spent, qualities, ok, ids = 0.0, [], True, []
        for s, (kind, step_type) in enumerate(STEPS):
            tokens = rng.choice((800, 2_000, 6_000))
            _, shared, actions, costs = step_context(kind, step_type, tokens)
            choice = policy.choose(shared, actions)
            model = CANDIDATES[choice.index]
            decision_id = f"dec-{seed}-{t}-{s}"
            ids.append(decision_id)
            yield DecisionEvent(
                event_id=f"ev-{decision_id}",
                task_id=task_id,
                occurred_at=at + timedelta(seconds=5 * s),
                decision_id=decision_id,
                trust_domain="eng",
                task_type="research",
                step_kind=kind,
                step_type=step_type,
                input_tokens=tokens,
                expected_output_tokens=300,
                granted_max_output_tokens=450,
                actions=list(CANDIDATES),
                pmf=choice.pmf,
                chosen_index=choice.index,
                model=model,
                propensity=choice.propensity,
                estimated_costs=costs,
                shared_features=shared,
                action_features=actions,
                policy_version=policy.version,
            )
            quality = min(1.0, max(0.0, QUALITY[step_type][model] + rng.uniform(-0.05, 0.05)))
            success = rng.random() < 0.5 + quality / 2
            cost = costs[choice.index] or 0.0
            spent += cost
            qualities.append(quality)
            ok = ok and success
            yield OutcomeEvent(
                event_id=f"ev-out-{decision_id}",
                task_id=task_id,
                occurred_at=at + timedelta(seconds=5 * s + 2),
                decision_id=decision_id,
                model=model,
                step_kind=kind,
                step_type=step_type,
                trust_domain="eng",
                success=success,
                quality=quality,
                input_tokens=tokens,
                output_tokens=300,
                cost_dollars=cost,
            )
        yield TaskClosedEvent(
            event_id=f"ev-close-{task_id}",
            task_id=task_id,
            occurred_at=at + timedelta(seconds=5 * len(STEPS)),
            trust_domain="eng",
            success=ok,
            quality=sum(qualities) / len(qualities),
            spent_dollars=spent,
            total_dollars=TASK_DOLLARS,
            steps=len(STEPS),
            decision_ids=ids,
        )


def records(events: list[AnyEvent] | Iterator[AnyEvent], first_offset: int = 0) -> list[Record]:
    """Events as partition-0 records from ``first_offset`` on."""
    return [Record(0, first_offset + i, encode_event(e)) for i, e in enumerate(events)]


def preferred(model: VWPolicyModel, kind: str, step_type: str) -> list[str]:
    """The top candidate for each probe size of a step."""
    tops = []
    for tokens in (800, 2_000, 6_000):
        _, shared, actions, _ = step_context(kind, step_type, tokens)
        pmf = model.predict(shared, actions)
        tops.append(CANDIDATES[max(range(len(pmf)), key=pmf.__getitem__)])
    return tops


class ListSink:
    """Dead letters kept in memory."""

    def __init__(self) -> None:
        self.letters: list[tuple[str, str]] = []

    def send(self, payload: str, reason: str, source: object) -> None:
        self.letters.append((payload, reason))

    def flush(self) -> None:
        pass


def test_learned_policy_moves_extraction_to_the_cheap_model(tmp_path: Path) -> None:
    """Closed loop: the router serves a snapshot of the learner's model every 50 tasks.

    Stated bound: after 250 tasks (1,750 events) the next 150 tasks send >= 70% of extraction
    steps to the cheap model (the prior sends ~10%) and >= 70% of planning steps to the strong
    one. Seeded; 18 of seeds 1-20 pass (two get stuck exploiting a worse arm for longer).
    """
    policy = prior_policy()
    assert preferred(policy.model, "execution", "extraction") == [MEDIUM] * 3
    assert preferred(policy.model, "control", "planning") == [STRONG] * 3
    settings = LearnerSettings(data_dir=tmp_path, lambda_initial=1.0, lambda_step=0.0)
    learner = Learner(
        settings, VWPolicyModel.from_bytes(policy.model.to_bytes()), dead_letters=ListSink()
    )
    served: list[DecisionEvent] = []
    for chunk in range(8):
        events = list(simulate(50, seed=3000 + chunk, policy=policy))
        served += [e for e in events if isinstance(e, DecisionEvent) and chunk >= 5]
        learner.process(records(events, learner.positions.get(0, 0)))
        snapshot = VWPolicyModel.from_bytes(learner.model.to_bytes())
        policy = RoutingPolicy(snapshot, f"snapshot-{chunk}", policy.exploration, seed=3 + chunk)

    assert learner.counters["consumed"] == EVENTS_TO_LEARN
    assert learner.counters["learned_steps"] == 400 * len(STEPS)
    assert learner.counters["dead_lettered"] == 0
    assert share(served, "extraction", CHEAP) >= 0.7
    assert share(served, "planning", STRONG) >= 0.7


def share(decisions: list[DecisionEvent], step_type: str, model: str) -> float:
    of_type = [d for d in decisions if d.step_type == step_type]
    return sum(d.model == model for d in of_type) / len(of_type)
