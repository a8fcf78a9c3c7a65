"""Model snapshots: how the learner hands its online-updated model to the router.

The learner writes each snapshot into its own folder under ``<data_dir>/snapshots`` and then
moves the ``CURRENT.json`` pointer (atomic replace), so a reader sees the previous snapshot or
the next one, never half of one. A snapshot names the registered version it descends from
(``base_version``): the router only takes snapshots of the champion it serves.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from learner.checkpoint import atomic_write

POINTER = "CURRENT.json"
KEEP = 3


@dataclass(frozen=True)
class SnapshotInfo:
    """What ``CURRENT.json`` says about the newest snapshot."""

    seq: int
    base_version: str
    events_learned: int
    allocator_state: dict[str, Any]
    written_at: str
    folder: str

    @property
    def label(self) -> str:
        return f"{self.base_version}+s{self.seq}"


class SnapshotStore:
    """Snapshots under ``<data_dir>/snapshots``: the learner writes, the router reads."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "snapshots"

    def write(
        self,
        model_bytes: bytes,
        base_version: str,
        allocator_state: dict[str, Any],
        events_learned: int,
    ) -> SnapshotInfo:
        """Write a new snapshot and point ``CURRENT.json`` at it; keep the last few."""
        current = self.current()
        seq = 1 if current is None else current.seq + 1
        folder = f"{seq:08d}"
        path = self.root / folder
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / "model.vw", model_bytes)
        info = SnapshotInfo(
            seq=seq,
            base_version=base_version,
            events_learned=events_learned,
            allocator_state=allocator_state,
            written_at=datetime.now(UTC).isoformat(),
            folder=folder,
        )
        atomic_write(self.root / POINTER, json.dumps(asdict(info)).encode())
        self._prune(seq)
        return info

    def current(self) -> SnapshotInfo | None:
        try:
            return SnapshotInfo(**json.loads((self.root / POINTER).read_text()))
        except FileNotFoundError:
            return None

    def pointer_mtime(self) -> int | None:
        try:
            return os.stat(self.root / POINTER).st_mtime_ns
        except FileNotFoundError:
            return None

    def model_path(self, info: SnapshotInfo) -> Path:
        return self.root / info.folder / "model.vw"

    def _prune(self, newest: int) -> None:
        for child in self.root.iterdir():
            if child.is_dir() and child.name.isdigit() and int(child.name) <= newest - KEEP:
                shutil.rmtree(child, ignore_errors=True)
