"""What VW sees of a candidate that repeats from step to step, built once and kept as text.

A candidate's catalog facts (namespace ``model``) and its recent record for the step type and
trust domain (``recent``) change only when the catalog entry or the rolling features are
replaced; only its estimated cost (``cost``) is new at each step. Keeping the first two with
their VW text leaves one small namespace to build and render per candidate and decision.
"""

from __future__ import annotations

from dataclasses import dataclass

from feature_store.snapshot import RollingFeature, recent_action_features
from learner.vw_model import namespace_text
from router_service.catalog import ModelSpec
from router_service.features import model_features
from router_service.model_facts import facts_id

CACHED_CANDIDATES = 4096  # (model, step type, trust domain) triples


@dataclass(frozen=True, slots=True)
class StaticAction:
    """A candidate's step-independent namespaces, as features and as VW text.

    ``facts`` (namespace ``model``) go into decision events by ``facts_ref``; ``logged`` (its
    recent record) is written out in each event.
    """

    model: ModelSpec
    recent: RollingFeature | None
    facts: dict[str, float | str | bool]
    facts_ref: str
    logged: dict[str, dict[str, float | str | bool]]
    text: str


class ActionCache:
    """Static action namespaces by (model id, step type, trust domain), checked by identity.

    An entry stands while the catalog's ``ModelSpec`` and the rolling snapshot's record are
    the very objects it was built from: a catalog update or a rolling refresh replaces them.
    Past ``size`` entries (step types are the clients' free text) it starts afresh. A plain
    dict: its single reads and writes are atomic, and a lost race only rebuilds an entry.
    """

    def __init__(self, size: int = CACHED_CANDIDATES) -> None:
        self._size = size
        self._entries: dict[tuple[str, str, str], StaticAction] = {}

    def static(
        self, model: ModelSpec, recent: RollingFeature | None, step_type: str, domain: str
    ) -> StaticAction:
        key = (model.id, step_type, domain)
        entry = self._entries.get(key)
        if entry is None or entry.model is not model or entry.recent is not recent:
            facts, logged = model_features(model), recent_action_features(recent)
            text = namespace_text({"model": facts, **logged})
            entry = StaticAction(model, recent, facts, facts_id(facts), logged, text)
            if len(self._entries) >= self._size:
                self._entries.clear()
            self._entries[key] = entry
        return entry
