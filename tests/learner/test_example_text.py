"""ExampleTexts: the VW text of ``example_text`` byte for byte, from a bounded cache."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from bench.service_perf import event_stream
from feature_store.snapshot import RollingFeature, recent_action_features
from learner.decoder import EventDecoder
from learner.example_text import ExampleTexts
from learner.vw_model import LabeledExample, example_text, namespace_text
from learner.wire_events import Decision
from router_service.features import cost_features


def _decisions(count: int) -> list[Decision]:
    decoder = EventDecoder()
    events = (decoder.decode(value) for _, value in event_stream(count, seed=11))
    return [event for event in events if isinstance(event, Decision)]


def _recent(n: int, latency: float | None) -> dict[str, float | str | bool]:
    feature = RollingFeature(
        "m", "t", "d", n, n // 2, 0.5, 0.7, 0.01 * n, latency, n, datetime.now(UTC), 50
    )
    return recent_action_features(feature)["recent"]


def test_the_benchmark_events_text_is_example_texts_byte_for_byte() -> None:
    texts = ExampleTexts()
    decisions = _decisions(4_400)
    assert len(decisions) == 2_000
    for number, event in enumerate(decisions):
        for chosen in (event.chosen_index, number % len(event.actions)):
            example = LabeledExample(
                event.shared_features, event.action_features, chosen, -0.37 * number, 0.21
            )
            assert texts.example(example) == example_text(example)


@pytest.mark.parametrize(
    "cost",
    [None, 0.0, 1e-9, 0.002, 3.5, 1e6, math.inf],
)
@pytest.mark.parametrize(
    "recent",
    [{"unseen": True}, _recent(1, None), _recent(40, 2.5)],
)
def test_costs_records_and_inline_facts_render_as_example_text(
    cost: float | None, recent: dict[str, float | str | bool]
) -> None:
    texts = ExampleTexts()
    event = _decisions(11)[0]
    price = cost_features(cost)
    weird = {"log_cost": math.nan} if cost == math.inf else {"log_cost": 0, "extra": "a b"}
    actions = [
        {**event.action_features[0], "recent": recent, "cost": price},
        {"model": {"id": "inline", "self_hosted": True}, "cost": price, "recent": recent},
        {"recent": recent, "cost": weird},
        {"cost": {}},
    ]
    for chosen in range(len(actions)):
        example = LabeledExample(event.shared_features, actions, chosen, 0.5, 1.0)
        assert texts.example(example) == example_text(example)


def test_facts_dicts_are_kept_by_identity_and_bounded() -> None:
    texts = ExampleTexts(size=8)
    shared_facts = {"id": "a", "tier": "small"}
    assert texts.action({"model": shared_facts}) == "|m id=a tier=small"
    for n in range(100):  # inline facts: a new dict each time
        assert texts.action({"model": {"id": f"m{n}"}}) == f"|m id=m{n}"
        assert len(texts._facts) <= 8
    for n in range(100):  # router actions with a recent record new each time
        action = {"model": shared_facts, "recent": {"n_log": n / 7}, "cost": {"log_cost": 0.5}}
        assert texts.action(action) == namespace_text(action)
        assert len(texts._static) <= 8


@pytest.mark.parametrize(
    ("probability", "chosen", "match"),
    [(0.0, 0, "probability"), (1.5, 0, "probability"), (0.5, 3, "out of range")],
)
def test_impossible_labels_are_refused_as_example_text_refuses_them(
    probability: float, chosen: int, match: str
) -> None:
    example = LabeledExample({"step": {"k": "x"}}, [{"model": {"id": "a"}}], chosen, 0, probability)
    with pytest.raises(ValueError, match=match):
        example_text(example)
    with pytest.raises(ValueError, match=match):
        ExampleTexts().example(example)
