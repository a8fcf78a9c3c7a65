"""The learner as the router's deployment runs it: events in, snapshots and features out.

Wires :func:`learner.service.run_learner` to the router's settings, the DuckDB feature store,
the snapshot store the router hot-swaps from, and the rolling-features export the router reads.
The learner keeps learning online from the model it holds and runs the hands-off lifecycle
(:mod:`learner.auto_promotion`: scheduled registration, the promotion gate). When an operator
moves the champion (a promotion or a rollback), it continues from that champion instead, so its
snapshots always descend from the version the routers serve.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from feature_store.store import DuckDBFeatureStore
from learner.auto_promotion import open_promoter
from learner.checkpoint import atomic_write
from learner.registry import ModelRegistry, RegistryError
from learner.service import Learner, run_learner
from learner.settings import LearnerSettings
from learner.snapshots import SnapshotStore
from learner.vw_model import VWPolicyModel
from router_service.catalog import Catalog
from router_service.champion import open_registry, registered_version
from router_service.policy import policy_version
from router_service.policy_refresh import rolling_features_path
from router_service.settings import Settings
from router_service.trust import TrustPolicies

log = logging.getLogger(__name__)
LINEAGE_FILE = "learner_lineage.json"
CHAMPION_CHECK_SECONDS = 5.0
ROLLING_EXPORT_SECONDS = 5.0
"""How often the rolling features are exported for the routers (snapshots go out every
publication): their means over the last outcomes of a key move little in a second."""


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


class Lineage:
    """Which registered version the learner's model descends from, kept across restarts."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._path = settings.data_dir / LINEAGE_FILE
        models = list(Catalog.from_file(settings.catalog_path).snapshot().values())
        self.base_version = policy_version(settings, models)
        self.champion: str | None = None
        if self._path.exists():
            saved = json.loads(self._path.read_text())
            self.base_version, self.champion = saved["base_version"], saved["champion"]
        self._checked_at = 0.0
        self._registry: ModelRegistry | None = None

    def _open_registry(self) -> ModelRegistry | None:
        """The registry, opened once (an MLflow client costs more than the alias read);
        None while there is none yet, so a later look opens the one created meanwhile."""
        if self._registry is None:
            self._registry = open_registry(self._settings)
        return self._registry

    def moved_champion(self, force: bool = False) -> VWPolicyModel | None:
        """The champion's model if the alias moved since we last looked, else None."""
        now = time.monotonic()
        if not force and now - self._checked_at < CHAMPION_CHECK_SECONDS:
            return None
        self._checked_at = now
        try:
            registry = self._open_registry()
            if registry is None:
                return None
            version = registry.get_alias_version("champion")
            if version is None or version == self.champion:
                return None
            model = registry.load_bundle(version).policy_model()
        except RegistryError as exc:  # keep learning on the model we have; look again later
            log.warning("could not follow the champion: %s", exc)
            return None
        self.adopt(version)
        return model

    def adopt(self, version: str) -> None:
        """From now on the learner's model descends from registered ``version``."""
        self.champion, self.base_version = version, registered_version(version)
        atomic_write(
            self._path,
            json.dumps({"base_version": self.base_version, "champion": version}).encode(),
        )


def publishing_hook(
    settings: Settings, store: DuckDBFeatureStore
) -> Callable[[Callable[[], bytes], dict[str, Any], int, bool], VWPolicyModel | None]:
    """After model updates: follow the champion, run the lifecycle's rounds, write a snapshot,
    export rolling features (every ``ROLLING_EXPORT_SECONDS``)."""
    lineage = Lineage(settings)
    promoter = open_promoter(settings, store, lineage)
    snapshots = SnapshotStore(settings.data_dir)
    rolling_path = rolling_features_path(settings.data_dir)
    exported_at = float("-inf")

    def publish(
        get_bytes: Callable[[], bytes], allocator: dict[str, Any], learned: int, behind: bool
    ) -> VWPolicyModel | None:
        busy = promoter.busy  # a round may be moving the champion: look again afterwards
        # A round about to run looks at the champion first; a deferred one does not yet.
        champion = None if busy else lineage.moved_champion(force=promoter.due(learned, behind))
        if champion is not None:
            promoter.champion_moved(learned)
            return champion
        model = get_bytes()  # one save for the round and the snapshot
        promoter.tick(lambda: model, allocator, learned, behind)
        snapshots.write(model, lineage.base_version, allocator, learned)
        nonlocal exported_at
        if time.monotonic() - exported_at >= ROLLING_EXPORT_SECONDS:
            store.export_rolling_features(rolling_path)
            exported_at = time.monotonic()
        return None

    return publish


def run_online_learner(
    settings: Settings, bootstrap_servers: str, stop: threading.Event
) -> Learner:
    """Learn from the events topic until ``stop`` is set."""
    config = learner_settings(settings, bootstrap_servers)
    store = DuckDBFeatureStore(
        config.feature_store_path, memory_limit=config.feature_store_memory_limit
    )
    return run_learner(
        config,
        stop,
        router_settings=settings,
        store=store,
        on_model_updated=publishing_hook(settings, store),
        cost_weight=domain_cost_weights(settings),
    )


def domain_cost_weights(settings: Settings) -> Callable[[str], float]:
    """Each trust domain's ``cost_weight`` from the router's trust policy file."""
    policies = TrustPolicies(settings.trust_policy_path)
    return lambda domain: policies.resolve(domain).policy.cost_weight
