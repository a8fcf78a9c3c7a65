"""The feature-store seam the learner writes through and offline tools read from."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from feature_store.batch import AnyStoredEvent, WriteResult
from feature_store.logged import LoggedStep
from feature_store.snapshot import RollingFeature


class FeatureStore(Protocol):
    """Idempotent event writes, rolling features and logged bandit data."""

    def write_events(self, events: Sequence[AnyStoredEvent]) -> WriteResult:
        """Write a batch atomically and durably; redeliveries change nothing."""
        ...

    def rolling_features(self) -> list[RollingFeature]:
        """Recent per-(model, step_type, trust_domain) features."""
        ...

    def export_rolling_features(self, path: Path) -> int:
        """Write the rolling features snapshot atomically; return how many keys it holds."""
        ...

    def logged_steps(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        trust_domain: str | None = None,
        policy_version: str | None = None,
    ) -> list[LoggedStep]:
        """Decisions joined with their outcomes, ordered by decision time."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...
