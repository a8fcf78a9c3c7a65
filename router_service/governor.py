"""The budget governor: which candidates a step may use and how the task's execution reshapes.

Rules run in a fixed order and each one that fires is reported: the retry cap (abort), skipping
optional steps once the budget is tight, upgrading under recovery pressure, downgrading when
burn is ahead of plan or the preferred model does not fit, context compression, and asking for
confirmation before an expensive branch. The governor never hands back a model the task cannot
afford.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from router_service.catalog import ModelSpec
from router_service.ledger import Headroom, TaskBooks
from router_service.observed_costs import ObservedCosts
from router_service.schemas import Action, DecideRequest, Rule
from router_service.settings import GovernorSettings
from router_service.trust import DomainPolicy

SPECIAL_KINDS = ("final_synthesis", "handoff")


@dataclass(frozen=True)
class Costed:
    """A candidate priced for this step: display estimate, grant and worst-case reservation."""

    model: ModelSpec
    estimated_cost: float | None
    rule_reason: str | None = None
    budget_reason: str | None = None
    grant: int = 0
    reservation: float = 0.0

    @property
    def eligible(self) -> bool:
        """Allowed by every rule except the budget (so the policy's preference can be read)."""
        return self.rule_reason is None

    @property
    def excluded_reason(self) -> str | None:
        return self.rule_reason or self.budget_reason


@dataclass
class Plan:
    """The governor's verdict before the policy samples from ``allowed``."""

    allowed: list[Costed]
    rules: list[Rule] = field(default_factory=list)
    stop: Action | None = None
    input_tokens: int = 0

    def fire(self, rule: str, action: Action, detail: str) -> None:
        self.rules.append(Rule(rule=rule, action=action, detail=detail))


def price_step(
    model: ModelSpec,
    input_tokens: int,
    expected_output: int,
    room: Headroom,
    settings: GovernorSettings,
    observed: ObservedCosts,
    step_type: str,
) -> tuple[int, float, str | None]:
    """Grant, worst-case reservation and, if it cannot be afforded, why."""
    desired = math.ceil(expected_output * settings.output_grant_factor)
    token_room = min(desired, room.output_tokens)
    if token_room < expected_output:
        return 0, 0.0, f"needs {expected_output} output tokens, {room.output_tokens} left"
    rate = model.self_hosted_rate
    if model.priced:
        fixed = model.token_cost(input_tokens, 0) or 0.0
        per_output = (model.output_price_per_mtok or 0.0) / 1_000_000
    elif rate is not None:
        fixed, per_output = rate.cost(input_tokens, 0), rate.cost(0, 1)
    else:
        estimate = observed.estimate(model.id, step_type, input_tokens, token_room)
        if estimate is None:
            estimate = settings.unpriced_step_cost
        if estimate > room.dollars:
            return 0, 0.0, f"observed cost ${estimate:.6f} exceeds ${room.dollars:.6f} left"
        return token_room, estimate, None
    if fixed > room.dollars:
        grant = 0
    elif per_output == 0:
        grant = token_room
    else:
        # Extreme catalog prices make this quotient overflow to inf: compare before converting.
        spare = (room.dollars - fixed) / per_output
        grant = token_room if spare >= token_room else int(spare)
        # The quotient can round up by an ulp, and the books refuse a reservation over the room.
        while grant > 0 and fixed + grant * per_output > room.dollars:
            grant -= 1
    if grant < expected_output:
        worst = fixed + expected_output * per_output
        return 0, 0.0, f"step costs up to ${worst:.6f}, ${room.dollars:.6f} left"
    return grant, fixed + grant * per_output, None


def plan_step(
    request: DecideRequest,
    books: TaskBooks,
    planned_steps: int | None,
    candidates: list[Costed],
    domain: DomainPolicy,
    settings: GovernorSettings,
) -> Plan:
    """Apply the rules that do not need the policy's preference."""
    step, signals = request.step, request.signals
    room = books.headroom(step.kind)
    plan = Plan(allowed=[c for c in candidates if c.excluded_reason is None])
    plan.input_tokens = min(step.input_tokens, room.input_tokens)
    special = step.kind in SPECIAL_KINDS
    budget = books.budget
    # This retry would be the router's retries_used + 1st, or the agent's count, if larger.
    retry_number = max(signals.retries, books.retries_used + 1)
    if signals.retries > 0 and retry_number > budget.hard_stop_after_retries and not special:
        plan.fire(
            "retry_cap",
            "abort",
            f"retry {retry_number} (agent reports {signals.retries}, router booked "
            f"{books.retries_used}), hard stop after {budget.hard_stop_after_retries}",
        )
        plan.stop = "abort"
        return plan
    if step.optional and (_tight(books, settings) or _burn_ahead(books, planned_steps, settings)):
        plan.fire("budget_tight", "skip_optional", "optional step skipped to protect the budget")
        plan.stop = "skip_optional"
        return plan
    if plan.input_tokens < step.input_tokens:
        plan.fire(
            "input_token_cap",
            "compress_context",
            f"{step.input_tokens} input tokens, {room.input_tokens} left under the cap: "
            f"compress to {plan.input_tokens}",
        )
    if plan.input_tokens == 0:
        plan.stop = "abort"
        plan.fire(
            "input_token_cap",
            "abort",
            f"no input tokens left under the task's cap of {budget.max_input_tokens}",
        )
    elif not plan.allowed:
        plan.stop = "abort"
        plan.fire("nothing_affordable", "abort", _nothing_left(candidates, books))
    return plan


def under_pressure(request: DecideRequest, settings: GovernorSettings) -> str | None:
    """Why the task needs a stronger model now, if it does."""
    s = request.signals
    causes = []
    if s.retries:
        causes.append(f"retries={s.retries}")
    if s.malformed_tool_args:
        causes.append(f"malformed_tool_args={s.malformed_tool_args}")
    if s.loop_detected:
        causes.append("loop_detected")
    if s.prior_confidence is not None and s.prior_confidence < settings.recovery_confidence:
        causes.append(f"prior_confidence={s.prior_confidence:g}")
    return ", ".join(causes) or None


def reshape(
    plan: Plan,
    preferred: Costed,
    affordable: list[Costed],
    request: DecideRequest,
    books: TaskBooks,
    planned_steps: int | None,
    settings: GovernorSettings,
) -> list[Costed]:
    """Upgrade or downgrade relative to the policy's preferred model; returns the set to draw."""
    rank = preferred.model.tier_rank
    pressure = under_pressure(request, settings)
    if pressure and not _tight(books, settings):
        stronger = [c for c in affordable if c.model.tier_rank > rank]
        if stronger:
            plan.fire("recovery_pressure", "upgrade", f"{pressure}: above {preferred.model.tier}")
            return stronger
    if preferred not in affordable:
        plan.fire("budget_fit", "downgrade", f"{preferred.model.id}: {preferred.excluded_reason}")
        return affordable
    if _burn_ahead(books, planned_steps, settings):
        cheaper = [c for c in affordable if c.model.tier_rank < rank]
        if cheaper:
            plan.fire(
                "burn_ahead_of_plan",
                "downgrade",
                f"{_burn_detail(books, planned_steps)}: below {preferred.model.tier}",
            )
            return cheaper
    return affordable


def finish(
    plan: Plan,
    chosen: Costed,
    request: DecideRequest,
    books: TaskBooks,
    domain: DomainPolicy,
    settings: GovernorSettings,
) -> None:
    """Rules on the chosen model: context crowding and confirmation of expensive branches."""
    window = chosen.model.context_window
    if plan.input_tokens > settings.context_crowding * window:
        target = int(settings.context_crowding * window * 0.75)
        plan.fire(
            "context_crowding",
            "compress_context",
            f"{plan.input_tokens} input tokens crowd {chosen.model.id}'s {window}-token window: "
            f"compress to {target}",
        )
    room = books.headroom(request.step.kind).dollars
    if (
        request.step.kind not in SPECIAL_KINDS
        and not request.confirmed
        and chosen.reservation > domain.confirmation_share * room
    ):
        plan.fire(
            "expensive_branch",
            "require_confirmation",
            f"step commits up to ${chosen.reservation:.6f}, more than "
            f"{domain.confirmation_share:.0%} of ${room:.6f} left; resend with confirmed=true",
        )
        plan.stop = "require_confirmation"


def primary_action(plan: Plan) -> Action:
    """The one action a decision reports: the strongest rule that fired."""
    order: list[Action] = [
        "abort",
        "skip_optional",
        "require_confirmation",
        "upgrade",
        "downgrade",
        "compress_context",
    ]
    fired = {r.action for r in plan.rules}
    return next((a for a in order if a in fired), "proceed")


def _ordinary_total(books: TaskBooks) -> float:
    b = books.budget
    return b.total_dollars - b.reserve_for_final_synthesis - b.reserve_for_human_handoff


def _tight(books: TaskBooks, settings: GovernorSettings) -> bool:
    left = books.headroom("execution").dollars
    return left < settings.tight_fraction * _ordinary_total(books)


def _spent_share(books: TaskBooks) -> float:
    return books.committed_dollars() / _ordinary_total(books)


def _burn_ahead(books: TaskBooks, planned_steps: int | None, settings: GovernorSettings) -> bool:
    if not planned_steps:
        return False
    return _spent_share(books) - books.steps / planned_steps > settings.burn_margin


def _burn_detail(books: TaskBooks, planned_steps: int | None) -> str:
    return (
        f"{_spent_share(books):.0%} of the budget committed after "
        f"{books.steps} of {planned_steps} planned steps"
    )


def _nothing_left(candidates: list[Costed], books: TaskBooks) -> str:
    budget = books.budget
    why = "; ".join(f"{c.model.id}: {c.excluded_reason}" for c in candidates[:6])
    return (
        f"no candidate is affordable or allowed ({why}); "
        f"final_synthesis may still use ${books.headroom('final_synthesis').dollars:.6f} "
        f"(reserve ${budget.reserve_for_final_synthesis:g}) and handoff "
        f"${books.headroom('handoff').dollars:.6f} (reserve ${budget.reserve_for_human_handoff:g})"
    )
