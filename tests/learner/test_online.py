"""The deployed learner follows the champion's lineage across promotions and restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner import online
from learner.online import Lineage, domain_cost_weights
from learner.registry import ModelRegistry
from router_service.champion import open_registry
from router_service.settings import Settings
from tests.router_service.test_champion import register


def test_lineage_follows_promotions_and_survives_a_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    lineage = Lineage(settings)
    assert lineage.base_version.startswith("prior@")
    registry = ModelRegistry.embedded(settings.data_dir)
    first, second = register(registry, 1), register(registry, 2)
    registry.promote(first, "test", "start")
    assert lineage.moved_champion() is not None
    assert lineage.base_version == f"mlflow:{first}"
    lineage._checked_at = 0.0
    assert lineage.moved_champion() is None, "unchanged alias must not rebase again"
    registry.promote(second, "test", "next")
    restarted = Lineage(settings)
    assert restarted.base_version == f"mlflow:{first}"
    assert restarted.moved_champion() is not None
    assert restarted.base_version == f"mlflow:{second}"


def test_domain_cost_weights_come_from_the_trust_policy(tmp_path: Path) -> None:
    weights = domain_cost_weights(Settings(data_dir=tmp_path / "var"))
    assert weights("internal-eng") == 2.0
    assert weights("customer-finance") == 0.5
    assert weights("unknown-domain") == 1.0


def test_lineage_opens_the_registry_once_however_often_it_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    opened: list[ModelRegistry | None] = []

    def counting_open(settings: Settings) -> ModelRegistry | None:
        opened.append(open_registry(settings))
        return opened[-1]

    monkeypatch.setattr(online, "open_registry", counting_open)
    lineage = Lineage(settings)
    assert lineage.moved_champion(force=True) is None
    assert opened == [None], "no registry yet: nothing to cache"
    registry = ModelRegistry.embedded(settings.data_dir)
    registry.promote(register(registry, 1), "test", "start")
    assert lineage.moved_champion(force=True) is not None
    for _ in range(3):
        assert lineage.moved_champion(force=True) is None
    assert len(opened) == 2, "the registry, once it exists, is opened once"
