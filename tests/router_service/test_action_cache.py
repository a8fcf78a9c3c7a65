"""A candidate's repeating namespaces are kept with their text, rebuilt as their sources change."""

from __future__ import annotations

from dataclasses import replace

from learner.vw_model import namespace_text
from router_service.action_cache import ActionCache
from router_service.catalog import ModelSpec
from router_service.features import action_features
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
    assert entry.text == namespace_text(entry.features)
    assert entry.features["model"] == action_features(MODEL, None)["model"]
    assert entry.features["recent"]["success_rate"] == 0.75


def test_an_entry_stands_until_its_model_or_record_is_replaced() -> None:
    cache = ActionCache()
    first = cache.static(MODEL, RECENT, "extract", "eng")
    assert cache.static(MODEL, RECENT, "extract", "eng") is first
    refreshed = replace(RECENT, n=21, success_rate=0.8)
    assert (
        cache.static(MODEL, refreshed, "extract", "eng").features["recent"]["success_rate"] == 0.8
    )
    retiered = MODEL.model_copy(update={"tier": "large"})
    assert cache.static(retiered, refreshed, "extract", "eng").features["model"]["tier"] == "large"
    assert cache.static(MODEL, None, "extract", "eng").features["recent"] == {"unseen": True}
    assert cache.static(MODEL, RECENT, "summarize", "eng") is not first
