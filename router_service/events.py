"""Versioned events that cross the process boundary (router -> Kafka -> learner).

Imports only the standard library and pydantic, so the learner can use it without FastAPI.
Every event has an ``event_id`` (consumers deduplicate on it) and is keyed by ``task_id``.
Schema version 2 added a decision's ``model_refs`` and ``model_facts``; version 1 events are
still read.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION = 2
FeatureValue = float | str | bool
FeatureNamespaces = dict[str, dict[str, FeatureValue]]
CostSource = Literal["reported", "catalog", "self_hosted_rate", "observed_estimate", "reservation"]

__all__ = [
    "SCHEMA_VERSION",
    "AnyEvent",
    "CorrectionEvent",
    "CostSource",
    "DecisionEvent",
    "EventError",
    "OutcomeEvent",
    "TaskClosedEvent",
    "decode_event",
    "encode_event",
    "new_event_id",
]


_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def new_event_id() -> str:
    """128 random bits in hex, like ``uuid4().hex``, without a system call per id.

    Seeded from the OS once per process (again after a fork), so ids stay unique across
    processes and replicas; ``uuid4`` reads ``os.urandom`` every time, a slow system call here.
    """
    return f"{_ids.getrandbits(128):032x}"


def _now() -> datetime:
    return datetime.now(UTC)


class EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(default_factory=new_event_id, min_length=1)
    schema_version: Literal[1, 2] = SCHEMA_VERSION
    task_id: str = Field(min_length=1)
    occurred_at: datetime = Field(default_factory=_now)


class DecisionEvent(EventBase):
    """A routing decision with everything needed to learn from it and to replay it."""

    type: Literal["decision"] = "decision"
    decision_id: str
    trust_domain: str
    task_type: str
    step_kind: str
    step_type: str
    input_tokens: int = Field(ge=0)
    expected_output_tokens: int = Field(ge=0)
    granted_max_output_tokens: int = Field(ge=0)
    optional: bool = False
    actions: list[str] = Field(min_length=1, description="model ids the pmf is over, in order")
    pmf: list[float] = Field(min_length=1)
    chosen_index: int = Field(ge=0)
    model: str
    propensity: float = Field(gt=0, le=1)
    estimated_costs: list[float | None]
    shared_features: FeatureNamespaces
    action_features: list[FeatureNamespaces] = Field(
        description="per action, its namespaces; without ``model`` when ``model_refs`` is given"
    )
    model_refs: list[str] = Field(
        default_factory=list,
        description="per action, the content id of its catalog facts (namespace ``model``)",
    )
    model_facts: dict[str, dict[str, FeatureValue]] = Field(
        default_factory=dict,
        description="catalog facts by content id, carried by the first decision of the task "
        "to refer to them (router_service.model_facts)",
    )
    policy_version: str
    governor_action: str = "proceed"
    reserved_dollars: float = Field(0.0, ge=0)
    total_dollars: float | None = Field(None, gt=0, description="the task's dollar cap")
    prompt: str | None = Field(
        None, description="the step's prompt text, only when the operator logs prompts"
    )


class OutcomeEvent(EventBase):
    """What a step cost and how it went, as reported by the agent."""

    type: Literal["outcome"] = "outcome"
    decision_id: str
    model: str
    step_kind: str
    step_type: str
    trust_domain: str
    success: bool
    quality: float = Field(ge=0, le=1)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cached_input_tokens: int = Field(0, ge=0)
    cost_dollars: float = Field(ge=0)
    cost_source: CostSource | None = Field(None, description="where cost_dollars came from")
    latency_ms: float | None = Field(None, ge=0)
    error: str | None = None
    exceeded_grant: bool = False


class CorrectionEvent(EventBase):
    """A human's verdict on a decision (or a whole task): thumbs up/down, a preferred model."""

    type: Literal["correction"] = "correction"
    decision_id: str | None = None
    preferred_model: str | None = None
    rating: Literal["up", "down"] | None = None
    note: str | None = None


class TaskClosedEvent(EventBase):
    """The task-level result, credited back to the task's steps by the learner."""

    type: Literal["task_closed"] = "task_closed"
    trust_domain: str
    success: bool
    quality: float = Field(ge=0, le=1)
    spent_dollars: float = Field(ge=0)
    total_dollars: float = Field(gt=0)
    steps: int = Field(ge=0)
    decision_ids: list[str] = Field(default_factory=list)


AnyEvent = Annotated[
    DecisionEvent | OutcomeEvent | CorrectionEvent | TaskClosedEvent,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


class EventError(ValueError):
    """An event that cannot be decoded; ``reason`` says why (it goes to the dead-letter topic)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_event(event: EventBase) -> bytes:
    return event.model_dump_json().encode()


def decode_event(data: bytes) -> AnyEvent:
    """Parse one event, or raise :class:`EventError` naming what is wrong."""
    try:
        return _ADAPTER.validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
        )
        raise EventError(f"invalid event: {problems}") from exc
