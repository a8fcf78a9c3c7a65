"""Events as the learner reads them: decoded, and decisions completed with their catalog facts.

A decision event names its candidates' catalog facts by content id and carries them only in
its task's first decision to refer to them (router_service.model_facts). The decoder keeps the
facts it has read, so every decision it returns has complete ``action_features``; its facts
go into the checkpoint with the join state, so resuming from it completes decisions the same.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec

from learner.wire_events import AnyWireEvent, Decision, decode_wire
from router_service.events import EventError

KEPT_FACTS = 65_536  # content ids, least recently used dropped first


class EventDecoder:
    """``decode_wire``, completing decisions from the catalog facts read so far."""

    def __init__(self, kept: int = KEPT_FACTS) -> None:
        self._kept = kept
        self._facts: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def decode(self, data: bytes) -> AnyWireEvent:
        """One event, or :class:`EventError` naming what is wrong or missing."""
        event = decode_wire(data)
        if event.type == "decision" and event.model_refs:  # type: ignore[union-attr]
            return self._complete(event)  # type: ignore[arg-type]
        return event

    def _complete(self, event: Decision) -> Decision:
        facts = self._facts
        for ref, carried in event.model_facts.items():
            if facts.get(ref) != carried:  # the same facts keep their dict (and its VW text)
                facts[ref] = carried
        refs, actions = event.model_refs, event.action_features
        if len(refs) != len(actions):
            raise EventError(
                f"invalid event: model_refs: {len(refs)} ids for {len(actions)} "
                "action_features; expected one per action"
            )
        if any("model" in features for features in actions):
            raise EventError(
                "invalid event: action_features: an action has a model namespace and a model "
                "ref; expected one of them"
            )
        try:
            complete = [{"model": facts[ref], **f} for ref, f in zip(refs, actions, strict=True)]
        except KeyError as missing:
            raise EventError(
                f"invalid event: model_refs: {missing.args[0]!r} is not in model_facts and no "
                f"earlier decision carried it (task {event.task_id!r})"
            ) from None
        for ref in refs:
            facts.move_to_end(ref)
        while len(facts) > self._kept:
            facts.popitem(last=False)
        return msgspec.structs.replace(
            event, action_features=complete, model_refs=[], model_facts={}
        )

    def to_state(self) -> dict[str, dict[str, Any]]:
        """The facts read so far, oldest use first, as JSON-able data."""
        return dict(self._facts)

    def restore(self, state: dict[str, dict[str, Any]]) -> None:
        self._facts = OrderedDict(state)
