"""The learner opens its feature store with its own settings."""

from __future__ import annotations

from pathlib import Path

from feature_store.store import DuckDBFeatureStore
from learner.service import default_store
from learner.settings import LearnerSettings


def test_the_feature_store_gets_the_learners_memory_limit(tmp_path: Path) -> None:
    settings = LearnerSettings(data_dir=tmp_path, feature_store_memory_limit="64MB")
    store = default_store(settings)
    assert isinstance(store, DuckDBFeatureStore)
    with store:
        (limit,) = store._con.execute("SELECT current_setting('memory_limit')").fetchone()
    assert limit == "61.0 MiB"  # DuckDB shows 64 MB in MiB
