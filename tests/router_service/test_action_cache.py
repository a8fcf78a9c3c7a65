"""A candidate's repeating namespaces are kept with their text, rebuilt as their sources change."""

from __future__ import annotations

from dataclasses import replace

from learner.vw_model import namespace_text
from router_service.action_cache import ActionCache
from router_service.catalog import ModelSpec
from router_service.features import action_features
from router_service.model_facts import facts_id
from tests.feature_store.test_snapshot import feature

MODEL = ModelSpec(
    id="m1",
    provider="p",
    tier="small",
    input_price_per_mtok=1.0,
    output_price_per_mtok=2.0,
    context_window=8000,
)
RECENT = feature("m1", n=20, step_type="extract", success_rate=0.75)


def test_the_cached_text_is_the_text_of_the_features_it_keeps() -> None:
    entry = ActionCache().static(MODEL, RECENT, "extract", "eng")
    assert entry.text == namespace_text({"model": entry.facts, **entry.logged})
    assert entry.facts == action_features(MODEL, None)["model"]
    assert entry.facts_ref == facts_id(entry.facts)
    assert entry.logged["recent"]["success_rate"] == 0.75


def test_an_entry_stands_until_its_model_or_record_is_replaced() -> None:
    cache = ActionCache()
    first = cache.static(MODEL, RECENT, "extract", "eng")
    assert cache.static(MODEL, RECENT, "extract", "eng") is first
    refreshed = replace(RECENT, n=21, success_rate=0.8)
    assert cache.static(MODEL, refreshed, "extract", "eng").logged["recent"]["success_rate"] == 0.8
    retiered = cache.static(MODEL.model_copy(update={"tier": "large"}), refreshed, "extract", "eng")
    assert retiered.facts["tier"] == "large"
    assert retiered.facts_ref != first.facts_ref
    assert cache.static(MODEL, None, "extract", "eng").logged["recent"] == {"unseen": True}
    assert cache.static(MODEL, RECENT, "summarize", "eng") is not first
