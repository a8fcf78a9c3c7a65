"""One routing decision: candidates, the governor's rules, the policy's draw, the reservation.

The whole decision runs inside the task's ledger transaction, so the headroom the governor
reads is still there when the reservation is committed; or, on a shared store, against a draft
of the books that is committed only if they did not change meanwhile.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from learner.vw_model import namespace_text
from router_service.action_cache import StaticAction
from router_service.catalog import ModelSpec
from router_service.errors import InvalidRequest
from router_service.events import SCHEMA_VERSION, DecisionEvent, new_event_id
from router_service.features import cost_features, cost_text, shared_features
from router_service.governor import (
    Costed,
    Plan,
    finish,
    plan_step,
    price_step,
    primary_action,
    reshape,
)
from router_service.ledger import LedgerDraft, Reservation, TaskBooks
from router_service.policy import Choice, RoutingPolicy
from router_service.schemas import DecideRequest, LedgerView, Task
from router_service.served import ServedDecision, explored, pack
from router_service.state import RouterState
from router_service.trust import ResolvedDomain


def price_candidates(
    request: DecideRequest,
    books: TaskBooks,
    models: dict[str, ModelSpec],
    domain: ResolvedDomain,
    state: RouterState,
) -> list[Costed]:
    """Every catalog model priced for this step, with why it is out where it is."""
    if request.candidates is not None:
        unknown = [m for m in request.candidates if m not in models]
        if unknown:
            raise InvalidRequest(
                f"candidates: unknown model ids {unknown}; expected ids from GET /v1/models",
                field="candidates",
                value=unknown,
            )
    step = request.step
    room = books.headroom(step.kind)
    input_tokens = min(step.input_tokens, room.input_tokens)
    min_rank = domain.policy.min_tier_rank(step.kind)
    result = []
    for model in models.values():
        estimate = model.token_cost(input_tokens, step.expected_output_tokens)
        if estimate is None:
            estimate = state.observed_costs.estimate(
                model.id, step.type, input_tokens, step.expected_output_tokens
            )
        grant, reservation, budget_reason = price_step(
            model,
            input_tokens,
            step.expected_output_tokens,
            room,
            state.governor,
            state.observed_costs,
            step.type,
        )
        reason = None
        if request.candidates is not None and model.id not in request.candidates:
            reason = "not among the request's candidates"
        elif not domain.policy.allows(model.id):
            reason = f"not allowed in trust domain {domain.name!r}"
        elif model.tier_rank < min_rank:
            reason = f"{model.tier} is below the {domain.name!r} minimum for {step.kind} steps"
        elif input_tokens + step.expected_output_tokens > model.context_window:
            reason = (
                f"step needs {input_tokens + step.expected_output_tokens} tokens, "
                f"context window is {model.context_window}"
            )
        result.append(Costed(model, estimate, reason, budget_reason, grant, reservation))
    return result


def decide(
    request: DecideRequest, task: Task, state: RouterState, draft: LedgerDraft | None = None
) -> tuple[ServedDecision, DecisionEvent | None]:
    """Govern, score, sample and reserve, atomically for the task; the event to log, if any.

    With a ``draft``, the reservation is written only when the caller commits it.
    """
    domain = state.trust.resolve(task.trust_domain)
    policy = state.policy
    features = _ActionFeatures(state, request.step.type, task.trust_domain)
    shared = shared_features(
        request.step,
        request.signals,
        trust_domain=task.trust_domain,
        task_type=task.task_type,
        tags=task.tags,
        context=request.context,
        prompt=request.prompt,
        client_features=request.features,
        embedding=request.embedding,
        embedder=state.prompt_embedder,
    )
    decision_id = f"dec_{new_event_id()}"
    with draft if draft is not None else state.ledger.transaction(task.task_id) as txn:
        books = txn.books
        before = books.view()
        candidates = price_candidates(request, books, state.catalog.snapshot(), domain, state)
        plan = plan_step(
            request, books, task.planned_steps, candidates, domain.policy, state.governor
        )
        chosen: Costed | None = None
        choice: Choice | None = None
        drawn_from: list[Costed] = []
        if plan.stop is None:
            drawn_from, choice = _draw(
                plan, candidates, request, books, task, shared, policy, features, domain, state
            )
            chosen = drawn_from[choice.index]
            finish(plan, chosen, request, books, domain.policy, state.governor)
        reserved = 0.0
        if chosen is not None and plan.stop is None:
            txn.reserve(
                Reservation(
                    decision_id=decision_id,
                    task_id=task.task_id,
                    model=chosen.model.id,
                    step_kind=request.step.kind,
                    dollars=chosen.reservation,
                    input_tokens=plan.input_tokens,
                    output_tokens=chosen.grant,
                    is_retry=request.signals.retries > 0,
                    expires_at=state.ledger.now() + state.governor.reservation_ttl_seconds,
                )
            )
            reserved = chosen.reservation
        decision = _served(
            decision_id, request, task, domain, policy, plan, candidates, drawn_from, choice,
            reserved, before, books.view(),
        )  # fmt: skip
        txn.record(decision.ref(), decision.packed, decision.is_step)
    if plan.stop is not None or chosen is None or choice is None:
        return decision, None
    # Built from parts already validated or computed here; pydantic's validation of the nested
    # feature dicts would cost a twentieth of the decision. The learner validates on reading.
    # Every field is given: a default left to model_construct costs it a signature inspection.
    event = DecisionEvent.model_construct(
        event_id=new_event_id(),
        schema_version=SCHEMA_VERSION,
        type="decision",
        task_id=task.task_id,
        decision_id=decision_id,
        occurred_at=datetime.fromtimestamp(decision.created_at, UTC),
        trust_domain=task.trust_domain,
        task_type=task.task_type,
        step_kind=request.step.kind,
        step_type=request.step.type,
        input_tokens=request.step.input_tokens,
        expected_output_tokens=request.step.expected_output_tokens,
        granted_max_output_tokens=chosen.grant,
        optional=request.step.optional,
        actions=[c.model.id for c in drawn_from],
        pmf=choice.pmf,
        chosen_index=choice.index,
        model=chosen.model.id,
        propensity=choice.propensity,
        estimated_costs=[c.estimated_cost for c in drawn_from],
        shared_features=shared,
        action_features=[features.of(c) for c in drawn_from],
        model_refs=[features.facts_ref(c) for c in drawn_from],
        model_facts=features.facts(drawn_from),
        policy_version=policy.version,
        governor_action=decision.action,
        reserved_dollars=reserved,
        total_dollars=task.budget.total_dollars,
        prompt=request.prompt if state.settings.log_prompts else None,
    )
    return decision, event


def _served(
    decision_id: str,
    request: DecideRequest,
    task: Task,
    domain: ResolvedDomain,
    policy: RoutingPolicy,
    plan: Plan,
    candidates: list[Costed],
    drawn_from: list[Costed],
    choice: Choice | None,
    reserved: float,
    before: LedgerView,
    after: LedgerView,
) -> ServedDecision:
    """The decision's answer as plain data, serialised once, with its summary fields."""
    chosen = drawn_from[choice.index] if choice is not None else None
    action = primary_action(plan)
    probabilities = {}
    if choice is not None:
        probabilities = {c.model.id: p for c, p in zip(drawn_from, choice.pmf, strict=True)}
    served = chosen if plan.stop is None or plan.stop == "require_confirmation" else None
    created_at = datetime.now(UTC)
    model = served.model.id if served else None
    propensity = choice.propensity if served and choice else None
    alternatives = _alternatives(candidates, drawn_from, probabilities)
    body = {  # the fields of schemas.Decision, in its order
        "decision_id": decision_id,
        "task_id": task.task_id,
        "model": model,
        "propensity": propensity,
        "action": action,
        "rules": [r.model_dump() for r in plan.rules],
        "alternatives": alternatives,
        "reasons": _reasons(plan, served, choice, len(drawn_from), policy.version),
        "max_output_tokens": served.grant if served else 0,
        "max_input_tokens": plan.input_tokens if served else 0,
        "reserved_dollars": reserved,
        "policy_version": policy.version,
        "exploration": policy.describe_exploration(),
        "trust_domain": {
            "name": domain.name,
            "fallback": domain.fallback,
            "policy_version": domain.version,
        },
        "step": request.step.model_dump(),
        "signals": request.signals.model_dump(),
        "budget": task.budget.model_dump(),
        "ledger_before": before.model_dump(),
        "ledger": after.model_dump(),
        "created_at": created_at,
    }
    return ServedDecision(
        decision_id=decision_id,
        task_id=task.task_id,
        model=model,
        action=action,
        propensity=propensity,
        explored=explored(model, propensity, max(probabilities.values(), default=None)),
        rules=tuple((r.rule, r.action) for r in plan.rules),
        trust_domain=domain.name,
        step_kind=request.step.kind,
        step_type=request.step.type,
        max_output_tokens=body["max_output_tokens"],
        reserved_dollars=reserved,
        created_at=created_at.timestamp(),
        ledger=after,
        json=(answer := orjson.dumps(body)),
        packed=pack(answer),
    )


class _ActionFeatures:
    """Action features of candidates: catalog facts, step cost, and the model's recent record.

    The first and the last repeat across decisions (``state.action_cache`` keeps them with
    their VW text); the cost is built and rendered here, once per candidate and decision.
    """

    def __init__(self, state: RouterState, step_type: str, domain: str) -> None:
        self._cache = state.action_cache
        self._rolling = state.rolling
        self._step_type = step_type
        self._domain = domain
        self._text: dict[str, str] = {}
        self._statics: dict[str, StaticAction] = {}

    def of(self, candidate: Costed) -> dict:
        """The candidate's namespaces but its catalog facts, as the decision event logs them."""
        return {
            **self._static(candidate).logged,
            "cost": cost_features(candidate.estimated_cost),
        }

    def facts_ref(self, candidate: Costed) -> str:
        return self._static(candidate).facts_ref

    def facts(self, candidates: list[Costed]) -> dict[str, dict]:
        """The candidates' catalog facts by content id (router_service.model_facts)."""
        statics = [self._static(c) for c in candidates]
        return {s.facts_ref: s.facts for s in statics}

    def text(self, candidate: Costed) -> str:
        """The candidate's features as VW text, rendered once per decision."""
        model_id = candidate.model.id
        text = self._text.get(model_id)
        if text is None:
            cost = cost_text(candidate.estimated_cost)
            text = self._text[model_id] = f"{self._static(candidate).text} {cost}"
        return text

    def _static(self, candidate: Costed) -> StaticAction:
        model = candidate.model
        static = self._statics.get(model.id)
        if static is None:
            recent = self._rolling.get((model.id, self._step_type, self._domain))
            static = self._cache.static(model, recent, self._step_type, self._domain)
            self._statics[model.id] = static
        return static


def _draw(
    plan: Plan,
    candidates: list[Costed],
    request: DecideRequest,
    books: TaskBooks,
    task: Task,
    shared: dict,
    policy: RoutingPolicy,
    features: _ActionFeatures,
    domain: ResolvedDomain,
    state: RouterState,
) -> tuple[list[Costed], Choice]:
    """The policy's preference over eligible models, reshaped by budget, then one draw."""
    eligible = [c for c in candidates if c.eligible]
    shared_text = namespace_text(shared)
    preference = policy.preference_text(shared_text, [features.text(c) for c in eligible])
    preferred = eligible[max(range(len(eligible)), key=preference.pmf.__getitem__)]
    drawn_from = reshape(
        plan, preferred, plan.allowed, request, books, task.planned_steps, state.governor
    )
    if drawn_from == eligible:
        pmf = preference.pmf
    else:  # a subset, in the same order: its pmf from the scores, or a prediction of its own
        position = {c.model.id: i for i, c in enumerate(eligible)}
        pmf = policy.pmf_within(
            preference, [position[c.model.id] for c in drawn_from]
        ) or policy.pmf_text(shared_text, [features.text(c) for c in drawn_from])
    return drawn_from, policy.sample(pmf, domain.policy.max_exploration)


def _alternatives(
    candidates: list[Costed], drawn_from: list[Costed], probabilities: dict[str, float]
) -> list[dict]:
    """Every catalog model as schemas.Alternative fields, the drawn ones first."""
    considered = {c.model.id for c in drawn_from}
    result = []
    for c in candidates:
        reason = c.excluded_reason
        if reason is None and c.model.id not in considered and drawn_from:
            reason = "set aside by the governor's rule"
        result.append(
            {
                "model": c.model.id,
                "probability": probabilities.get(c.model.id, 0.0),
                "estimated_cost_dollars": c.estimated_cost,
                "excluded": reason is not None,
                "excluded_reason": reason,
            }
        )
    result.sort(key=lambda a: (a["excluded"], -a["probability"]))
    return result


def _reasons(
    plan: Plan, chosen: Costed | None, choice: Choice | None, allowed: int, version: str
) -> list[str]:
    reasons = [f"{r.action} ({r.rule}): {r.detail}" for r in plan.rules]
    if chosen is not None and choice is not None:
        top = max(choice.pmf)
        how = "policy's top choice" if choice.propensity >= top else "exploration"
        cost = (
            "cost from outcomes"
            if chosen.estimated_cost is None
            else f"estimated ${chosen.estimated_cost:.6f}"
        )
        reasons.append(
            f"{chosen.model.id} ({chosen.model.tier} tier, {cost}, reserving "
            f"${chosen.reservation:.6f} for up to {chosen.grant} output tokens) picked by {how} "
            f"with probability {choice.propensity:.3f} among {allowed} models, policy {version}"
        )
    return reasons
