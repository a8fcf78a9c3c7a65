"""Errors of the feature store, each saying whether a retry may help."""

from __future__ import annotations

from typing import ClassVar


class FeatureStoreError(Exception):
    """Root of every error the feature store raises on purpose."""

    retriable: ClassVar[bool] = False


class StoreUnavailable(FeatureStoreError):
    """The DuckDB file cannot be opened or written now (locked by another process, disk I/O)."""

    retriable = True


class StoreSchemaError(FeatureStoreError):
    """The DuckDB file was written by an incompatible schema version."""


class StoreWriteError(FeatureStoreError):
    """A batch could not be written for a reason a retry will not fix; nothing was committed."""


class SnapshotMissing(FeatureStoreError):
    """No rolling-feature snapshot exists yet (the learner has not exported one)."""

    retriable = True


class SnapshotError(FeatureStoreError):
    """A rolling-feature snapshot file is malformed; the message names the field."""
