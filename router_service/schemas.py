"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from router_service.events import CostSource

Action = Literal[
    "proceed",
    "upgrade",
    "downgrade",
    "compress_context",
    "skip_optional",
    "require_confirmation",
    "abort",
]
StepKind = Literal[
    "control", "execution", "verification", "presentation", "final_synthesis", "handoff"
]
ID_PATTERN = r"^[A-Za-z0-9._:@/-]{1,128}$"
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
FeatureName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
MAX_PROMPT_CHARS = 200_000
MAX_CLIENT_FEATURES = 64
MAX_EMBEDDING = 1_024
MAX_STEP_TOKENS = 10**9
"""Tokens one step may name; keeps every count and running total inside 64-bit storage."""
MAX_TASK_TOKENS = 10**12
MAX_DOLLARS = 1_000_000.0
"""Dollars one task may budget or one step may report."""
MAX_COUNT = 10_000
Dollars = Annotated[float, Field(allow_inf_nan=False, le=MAX_DOLLARS)]
StepTokens = Annotated[int, Field(ge=0, le=MAX_STEP_TOKENS)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class Strict(BaseModel):
    """Base for request bodies: unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Budget(Strict):
    """A task's budget: dollar and token caps, reserves, and the retry cap."""

    total_dollars: Dollars = Field(gt=0, description="Hard cap on the task's spend in dollars.")
    max_input_tokens: int = Field(gt=0, le=MAX_TASK_TOKENS)
    max_output_tokens: int = Field(gt=0, le=MAX_TASK_TOKENS)
    reserve_for_final_synthesis: Dollars = Field(0.0, ge=0)
    reserve_for_human_handoff: Dollars = Field(0.0, ge=0)
    hard_stop_after_retries: Count = 3

    @model_validator(mode="after")
    def _reserves_fit(self) -> Budget:
        reserves = self.reserve_for_final_synthesis + self.reserve_for_human_handoff
        if reserves >= self.total_dollars:
            raise ValueError(
                f"reserve_for_final_synthesis + reserve_for_human_handoff ({reserves:g}) "
                f"must be less than total_dollars ({self.total_dollars:g})"
            )
        return self


class TaskCreate(Strict):
    task_id: str | None = Field(None, pattern=ID_PATTERN)
    trust_domain: str = Field("default", min_length=1, max_length=64)
    task_type: str = Field(min_length=1, max_length=64)
    budget: Budget
    planned_steps: int | None = Field(None, gt=0, le=10_000)
    tags: dict[str, str] = Field(default_factory=dict, max_length=32)


class Step(Strict):
    kind: StepKind
    type: str = Field(min_length=1, max_length=64, description="Free text: planning, summarize...")
    input_tokens: int = Field(ge=1, le=MAX_STEP_TOKENS, description="the prompt's tokens")
    expected_output_tokens: int = Field(ge=1, le=MAX_STEP_TOKENS)
    optional: bool = False


class Signals(Strict):
    """What the agent runtime knows about how the task is going."""

    retries: Count = 0
    prior_confidence: float | None = Field(None, ge=0, le=1)
    malformed_tool_args: Count = 0
    loop_detected: bool = False
    self_corrections: Count = 0
    context_pressure: float = Field(0.0, ge=0, le=1)


class DecideRequest(Strict):
    task_id: str = Field(pattern=ID_PATTERN)
    step: Step
    signals: Signals = Field(default_factory=Signals)
    context: dict[str, FiniteFloat | str] = Field(default_factory=dict, max_length=32)
    candidates: list[str] | None = Field(None, min_length=1)
    confirmed: bool = Field(False, description="the agent confirms an expensive branch")
    prompt: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="the step's prompt text; only hashed word n-grams of its tail (and its "
        "embedding, when the router embeds prompts) are used",
    )
    features: dict[FeatureName, FiniteFloat] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CLIENT_FEATURES,
        description="the client's own features of the request, name -> finite number",
    )
    embedding: list[FiniteFloat] | None = Field(
        None, min_length=1, max_length=MAX_EMBEDDING, description="the client's embedding"
    )


class Alternative(BaseModel):
    model: str
    probability: float
    estimated_cost_dollars: float | None
    excluded: bool = False
    excluded_reason: str | None = None


class LedgerView(BaseModel):
    """The books of one task as reported by the API."""

    spent_dollars: float
    reserved_dollars: float
    remaining_dollars: float
    input_tokens_used: int
    output_tokens_used: int
    retries_used: int
    steps: int


class Rule(BaseModel):
    """One governor rule that fired, the action it implies, and why."""

    rule: str
    action: Action
    detail: str


class TrustDomainUsed(BaseModel):
    name: str
    fallback: bool
    policy_version: str


class Decision(BaseModel):
    decision_id: str
    task_id: str
    model: str | None = Field(description="null when the governor skips, aborts or asks first")
    propensity: float | None
    action: Action
    rules: list[Rule]
    alternatives: list[Alternative]
    reasons: list[str]
    max_output_tokens: int = Field(description="output limit to pass to the provider")
    max_input_tokens: int = Field(description="input tokens the step may send")
    reserved_dollars: float
    policy_version: str
    exploration: str
    trust_domain: TrustDomainUsed
    step: Step
    signals: Signals
    budget: Budget
    ledger_before: LedgerView
    ledger: LedgerView
    created_at: datetime


class OutcomeReport(Strict):
    """What a step cost and how it went; settles the decision's reservation."""

    decision_id: str = Field(pattern=ID_PATTERN)
    success: bool
    quality: float = Field(ge=0, le=1)
    input_tokens: StepTokens
    output_tokens: StepTokens = Field(description="visible output tokens")
    reasoning_tokens: StepTokens = Field(0, description="hidden reasoning, billed as output")
    cached_input_tokens: StepTokens = Field(0, description="part of input_tokens read from cache")
    cost_dollars: Dollars | None = Field(
        None, ge=0, description="if absent: from the catalog's prices or self-hosted rate"
    )
    latency_ms: FiniteFloat | None = Field(None, ge=0)
    error: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _cached_within_input(self) -> OutcomeReport:
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens must not exceed input_tokens")
        return self


class OutcomeAccepted(BaseModel):
    decision_id: str
    task_id: str
    cost_dollars: float
    cost_source: CostSource = Field(
        description="reported (cost_dollars), catalog (token prices), self_hosted_rate (GPU time), "
        "observed_estimate (bound from reported costs) or reservation (nothing better known)"
    )
    exceeded_grant: bool
    ledger: LedgerView


class CorrectionRequest(Strict):
    """A human's verdict: on one decision, or on a whole task."""

    decision_id: str | None = Field(None, pattern=ID_PATTERN)
    task_id: str | None = Field(None, pattern=ID_PATTERN)
    preferred_model: str | None = Field(None, min_length=1)
    rating: Literal["up", "down"] | None = None
    note: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _names_a_target_and_a_verdict(self) -> CorrectionRequest:
        if (self.decision_id is None) == (self.task_id is None):
            raise ValueError("give exactly one of decision_id or task_id")
        if self.preferred_model is None and self.rating is None:
            raise ValueError("give preferred_model, rating, or both")
        return self


class CorrectionAccepted(BaseModel):
    event_id: str
    task_id: str
    decision_id: str | None


class CloseRequest(Strict):
    success: bool
    quality: float = Field(ge=0, le=1)


class Task(BaseModel):
    task_id: str
    tenant: str = "default"
    trust_domain: str
    task_type: str
    budget: Budget
    planned_steps: int | None
    tags: dict[str, str]
    status: Literal["open", "closed"]
    created_at: datetime
    ledger: LedgerView | None = None


class TaskWithDecisions(Task):
    decisions: list[Decision]
