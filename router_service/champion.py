"""Serving the MLflow champion: load it when it appears, swap on promotion and rollback.

MLflow is imported only once a registry exists (a tracking URI is set, or the embedded
``<data_dir>/mlflow.db`` has been created by ``budget-router train`` or the learner), so a
router without one starts fast. If the registry cannot be read, the router keeps serving the
model it has and reports itself stale.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from router_service.policy import RoutingPolicy
from router_service.settings import Settings
from router_service.state import RouterState

if TYPE_CHECKING:
    from learner.model_bundle import ModelBundle
    from learner.registry import ModelRegistry
    from router_service.model_watcher import ChampionWatcher

log = logging.getLogger("budget_router.champion")
EMBEDDED_DB = "mlflow.db"


def open_registry(settings: Settings) -> ModelRegistry | None:
    """The configured registry, or the embedded one if it exists; None when there is none."""
    from learner.registry import ModelRegistry

    if settings.tracking_uri:
        return ModelRegistry(settings.tracking_uri)
    if not (settings.data_dir / EMBEDDED_DB).exists():
        return None
    return ModelRegistry.embedded(settings.data_dir)


def registered_version(version: str) -> str:
    """How decisions name a registered version (snapshots add ``+sN``)."""
    return f"mlflow:{version}"


class ChampionSync:
    """Follows the champion alias for one router; ``check_now`` runs on the refresh thread."""

    def __init__(self, state: RouterState) -> None:
        self._state = state
        self._watcher: ChampionWatcher | None = None
        self._open_error: str | None = None

    def check_now(self) -> None:
        if self._watcher is None:
            if (
                not self._state.settings.tracking_uri
                and not (self._state.settings.data_dir / EMBEDDED_DB).exists()
            ):
                return
            from router_service.model_watcher import ChampionWatcher

            try:
                registry = open_registry(self._state.settings)
            except Exception as exc:  # MLflow's own errors vary; keep the model, try again
                self._open_error = f"could not open the model registry: {exc!r}"
                log.warning("%s", self._open_error)
                return
            if registry is None:
                return
            self._watcher = ChampionWatcher(registry, self._swap)
        self._watcher.check_now()

    def _swap(self, bundle: ModelBundle, version: str) -> None:
        state = self._state
        name = registered_version(version)
        state.policy = RoutingPolicy(
            bundle.policy_model(), name, bundle.exploration_spec(), state.settings.seed
        )
        state.base_version = name
        state.allocator_state = dict(bundle.allocator_state)
        log.info("serving champion %s", name)

    def status(self) -> dict[str, Any]:
        if self._watcher is None:
            return {
                "champion_version": None,
                "registry": "none",
                "registry_error": self._open_error,
            }
        status = self._watcher.status()
        return {
            "champion_version": status.get("version"),
            "registry_stale": status.get("stale"),
            "registry_error": status.get("last_error"),
        }
