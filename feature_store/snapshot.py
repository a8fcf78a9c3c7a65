"""Rolling-feature snapshots: the file the learner exports and the router loads.

Imports neither DuckDB nor the store, so the router can load snapshots without opening the
learner's database (DuckDB allows one writer process). Files are replaced atomically: a
reader sees the previous snapshot or the next one, never a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from feature_store.errors import SnapshotError, SnapshotMissing

SNAPSHOT_FORMAT = "budget-router.rolling-features/1"
FeatureKey = tuple[str, str, str]


@dataclass(frozen=True)
class RollingFeature:
    """Recent record of one (model, step_type, trust_domain): the last ``window`` outcomes."""

    model: str
    step_type: str
    trust_domain: str
    n: int
    successes: int
    success_rate: float
    mean_quality: float
    mean_cost_dollars: float
    mean_latency_s: float | None
    n_total: int
    last_outcome_at: datetime
    window: int

    @property
    def key(self) -> FeatureKey:
        return (self.model, self.step_type, self.trust_domain)


_FEATURES = TypeAdapter(list[RollingFeature])
_FIELD_NAMES = tuple(f.name for f in fields(RollingFeature))


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fields(feature: RollingFeature) -> dict[str, object]:
    """``dataclasses.asdict`` for these flat records, without its deep copies."""
    return {name: getattr(feature, name) for name in _FIELD_NAMES}


def write_rolling_snapshot(
    features: Sequence[RollingFeature], path: Path, *, generated_at: datetime | None = None
) -> None:
    """Write ``features`` to ``path`` as JSON, atomically."""
    document = {
        "format": SNAPSHOT_FORMAT,
        "generated_at": (generated_at or datetime.now(UTC)).isoformat(),
        "features": [
            {**_fields(f), "last_outcome_at": f.last_outcome_at.isoformat()} for f in features
        ],
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document, separators=(",", ":")), encoding="utf-8")


def load_rolling_snapshot(path: Path) -> dict[FeatureKey, RollingFeature]:
    """Read a snapshot into a map keyed by (model, step_type, trust_domain)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise SnapshotMissing(f"no rolling-feature snapshot at {path}") from exc
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise SnapshotError(f"snapshot {path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != SNAPSHOT_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise SnapshotError(
            f"snapshot {path}: field 'format' is {found!r}, expected {SNAPSHOT_FORMAT!r}"
        )
    try:
        features = _FEATURES.validate_python(document.get("features"))
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise SnapshotError(f"snapshot {path}: features.{where}: {problem['msg']}") from exc
    return {f.key: f for f in features}


def recent_action_features(
    feature: RollingFeature | None,
) -> dict[str, dict[str, float | str | bool]]:
    """One candidate's ``recent`` VW namespace; a model with no history is marked ``unseen``."""
    if feature is None or feature.n == 0:
        return {"recent": {"unseen": True}}
    recent: dict[str, float | str | bool] = {
        "success_rate": feature.success_rate,
        # Same scale as the action's estimated cost (router_service.features.action_features).
        "mean_cost_log": math.log10(feature.mean_cost_dollars + 1e-6) / 6,
        "n_log": math.log1p(feature.n) / 10,
    }
    if feature.mean_latency_s is not None:
        recent["mean_latency_s"] = feature.mean_latency_s
    return {"recent": recent}
