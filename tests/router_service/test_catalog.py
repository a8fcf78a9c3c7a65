import json
from pathlib import Path

import pytest

from router_service.catalog import Catalog, ModelSpec
from router_service.errors import ConfigError, NotFound


def test_default_catalog_has_real_priced_models_of_every_tier() -> None:
    models = Catalog.from_file(None).snapshot()
    assert len(models) >= 8
    assert {m.tier for m in models.values()} == {"small", "medium", "large", "frontier"}
    gpt5 = models["gpt-5"]
    assert gpt5.input_price_per_mtok == 1.25
    assert gpt5.output_price_per_mtok == 10.0
    assert any(not m.priced for m in models.values())


def test_token_cost_prices_cached_input_at_the_cached_rate() -> None:
    model = ModelSpec(
        id="m",
        provider="p",
        tier="small",
        input_price_per_mtok=2.0,
        output_price_per_mtok=8.0,
        cached_input_price_per_mtok=0.5,
        context_window=1000,
    )
    assert model.token_cost(1_000_000, 0) == pytest.approx(2.0)
    assert model.token_cost(1_000_000, 0, cached_input_tokens=1_000_000) == pytest.approx(0.5)
    assert model.token_cost(0, 1_000_000) == pytest.approx(8.0)


def test_unpriced_model_has_no_token_cost() -> None:
    model = ModelSpec(id="local", provider="self", tier="small", context_window=8000)
    assert model.token_cost(100, 100) is None


def test_user_catalog_file_replaces_default(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(
        json.dumps(
            {"models": [{"id": "only", "provider": "x", "tier": "large", "context_window": 10}]}
        )
    )
    assert list(Catalog.from_file(path).snapshot()) == ["only"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "expected a JSON object"),
        ('{"nomodels": []}', "expected a JSON object"),
        ('{"models": []}', "empty"),
        ('{"models": [{"id": "a", "provider": "x", "tier": "huge", "context_window": 1}]}', "tier"),
        (
            '{"models": [{"id": "a", "provider": "x", "tier": "small", "context_window": 1},'
            '{"id": "a", "provider": "x", "tier": "small", "context_window": 1}]}',
            "repeats ids: a",
        ),
    ],
)
def test_bad_catalog_files_are_refused_with_the_reason(
    tmp_path: Path, content: str, match: str
) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        Catalog.from_file(path)


def test_upsert_adds_then_updates() -> None:
    catalog = Catalog.from_file(None)
    spec = ModelSpec(id="new", provider="p", tier="small", context_window=10)
    assert catalog.upsert(spec) is True
    assert catalog.upsert(spec.model_copy(update={"tier": "large"})) is False
    assert catalog.get("new").tier == "large"
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        catalog.get("nope")
