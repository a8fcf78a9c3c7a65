"""A task's decision events carry each catalog fact once, through one router, in order."""

from __future__ import annotations

from router_service.events import DecisionEvent
from router_service.model_facts import SentFacts, facts_id
from tests.learner.test_join import decision

FACTS = {facts_id({"id": "a"}): {"id": "a"}, facts_id({"id": "b"}): {"id": "b"}}
REF_A, REF_B = FACTS


def lean(did: str, task: str, refs: list[str]) -> DecisionEvent:
    return decision(
        did,
        0,
        task=task,
        action_features=[{}] * len(refs),
        model_refs=refs,
        model_facts={ref: FACTS[ref] for ref in refs},
    )


def carried(sent: SentFacts, *events: DecisionEvent) -> list[list[str]]:
    published: list[DecisionEvent] = []
    for event in events:
        sent.publish(event, published.append)
    return [sorted(e.model_facts) for e in published]


def test_only_a_tasks_first_decision_to_refer_to_facts_carries_them() -> None:
    sent = SentFacts()
    assert carried(
        sent,
        lean("d1", "t1", [REF_A]),
        lean("d2", "t1", [REF_A, REF_B]),
        lean("d3", "t1", [REF_B, REF_A]),
        lean("d4", "t2", [REF_A]),
    ) == [[REF_A], [REF_B], [], [REF_A]]


def test_a_forgotten_or_evicted_task_carries_its_facts_again() -> None:
    sent = SentFacts(tracked_tasks=1)
    assert carried(sent, lean("d1", "t1", [REF_A]), lean("d2", "t2", [REF_A])) == [[REF_A]] * 2
    assert carried(sent, lean("d3", "t1", [REF_A])) == [[REF_A]]  # t1 was evicted by t2
    sent.forget("t1")
    assert carried(sent, lean("d4", "t1", [REF_A])) == [[REF_A]]


def test_facts_ids_follow_content_not_key_order() -> None:
    assert facts_id({"id": "a", "tier": "small"}) == facts_id({"tier": "small", "id": "a"})
    assert facts_id({"id": "a", "tier": "small"}) != facts_id({"id": "a", "tier": "large"})
