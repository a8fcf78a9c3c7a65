"""The learner as the router's deployment runs it: events in, snapshots and features out.

Wires :func:`learner.service.run_learner` to the router's settings, the DuckDB feature store,
the snapshot store the router hot-swaps from, and the rolling-features export the router reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from feature_store.store import DuckDBFeatureStore
from learner.service import Learner, run_learner
from learner.settings import LearnerSettings
from learner.snapshots import SnapshotStore
from router_service.catalog import Catalog
from router_service.policy import policy_version
from router_service.policy_refresh import rolling_features_path
from router_service.settings import Settings


def learner_settings(settings: Settings, bootstrap_servers: str) -> LearnerSettings:
    """Learner settings that agree with the router's on data, topics and starting model."""
    return LearnerSettings(
        data_dir=settings.data_dir,
        bootstrap_servers=bootstrap_servers,
        topic=settings.kafka.events_topic,
        dead_letter_topic=settings.kafka.dead_letter_topic,
        group_id=settings.kafka.consumer_group,
        model_path=settings.policy_model_path,
    )


def publishing_hook(
    settings: Settings, store: DuckDBFeatureStore
) -> Callable[[Callable[[], bytes], dict[str, Any], int], None]:
    """After model updates: write a snapshot for the router and export rolling features."""
    models = list(Catalog.from_file(settings.catalog_path).snapshot().values())
    base_version = policy_version(settings, models)
    snapshots = SnapshotStore(settings.data_dir)
    rolling_path = rolling_features_path(settings.data_dir)

    def publish(get_bytes: Callable[[], bytes], allocator: dict[str, Any], learned: int) -> None:
        snapshots.write(get_bytes(), base_version, allocator, learned)
        store.export_rolling_features(rolling_path)

    return publish


def run_online_learner(
    settings: Settings, bootstrap_servers: str, stop: threading.Event
) -> Learner:
    """Learn from the events topic until ``stop`` is set."""
    config = learner_settings(settings, bootstrap_servers)
    store = DuckDBFeatureStore(config.feature_store_path)
    return run_learner(
        config,
        stop,
        router_settings=settings,
        store=store,
        on_model_updated=publishing_hook(settings, store),
    )
