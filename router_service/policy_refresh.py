"""Hot swap: the router picks up the learner's snapshots and rolling features as they appear.

A background thread looks every ``model_poll_seconds`` at the snapshot pointer and at the
rolling-features file. A new snapshot that descends from the version the router serves
replaces the policy by swapping one reference: a decision in flight keeps the policy object it
started with, so no request is dropped or fails during a swap.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from feature_store.errors import FeatureStoreError
from feature_store.snapshot import load_rolling_snapshot
from learner.snapshots import SnapshotStore
from learner.vw_model import VWPolicyModel
from router_service.champion import ChampionSync
from router_service.policy import RoutingPolicy
from router_service.state import RouterState

log = logging.getLogger("budget_router.refresh")
ROLLING_FILE = "rolling_features.json"


def rolling_features_path(data_dir: Path) -> Path:
    return data_dir / ROLLING_FILE


class PolicyRefresher:
    """Polls for new model snapshots and rolling features and swaps them into ``state``."""

    def __init__(self, state: RouterState) -> None:
        self._state = state
        self._snapshots = SnapshotStore(state.settings.data_dir)
        self._rolling_path = rolling_features_path(state.settings.data_dir)
        self._seen_pointer: int | None = None
        self._seen_rolling: float | None = None
        self._champion = ChampionSync(state)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="policy-refresh", daemon=True)
        self.last_refresh = time.time()
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._state.settings.model_poll_seconds):
            self.check_now()

    def check_now(self) -> bool:
        """Load whatever is new; True when the policy was swapped."""
        before = self._state.policy.version
        try:
            self._champion.check_now()
            self._load_rolling()
            self._load_snapshot()
            self.last_error = None
        except (OSError, ValueError, FeatureStoreError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("policy refresh failed, keeping the current model: %s", self.last_error)
        swapped = self._state.policy.version != before
        if swapped:
            self.last_refresh = time.time()
        self._state.metrics.set_model(
            self._state.policy.version, self.last_error is not None, time.time() - self.last_refresh
        )
        return swapped

    def _load_rolling(self) -> None:
        try:
            mtime = self._rolling_path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != self._seen_rolling:
            self._state.rolling = load_rolling_snapshot(self._rolling_path)
            self._seen_rolling = mtime

    def _load_snapshot(self) -> None:
        mtime = self._snapshots.pointer_mtime()
        if mtime is None or mtime == self._seen_pointer:
            return
        self._seen_pointer = mtime
        info = self._snapshots.current()
        state = self._state
        if info is None or info.base_version != state.base_version:
            return
        if info.label == state.policy.version:
            return
        current = state.policy
        model = VWPolicyModel.load(self._snapshots.model_path(info))
        state.policy = RoutingPolicy(model, info.label, current.exploration, state.settings.seed)
        state.allocator_state = info.allocator_state
        log.info("serving snapshot %s (%d steps learned)", info.label, info.events_learned)

    def status(self) -> dict[str, Any]:
        return {
            **self._champion.status(),
            "policy_version": self._state.policy.version,
            "base_version": self._state.base_version,
            "seconds_since_refresh": time.time() - self.last_refresh,
            "last_error": self.last_error,
        }
