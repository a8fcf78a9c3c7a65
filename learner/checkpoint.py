"""Atomic checkpoints: model bytes, offsets to resume from, allocator, join and dedupe state.

One JSON file, written to a temporary name in the same directory, fsynced, then renamed over
the old one with ``os.replace`` (and the directory fsynced), so a crash at any moment leaves
either the previous checkpoint or the new one, never a torn file. The offsets in it, not the
broker's committed offsets, are where the learner resumes; they hold for the cluster whose id
is saved beside them (a different id means a new, empty log: read it from its beginning).
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from learner.settings import CheckpointError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """Everything the learner needs to resume exactly where it was."""

    model: bytes
    topic: str
    offsets: dict[int, int]
    allocator: dict[str, Any]
    join: dict[str, Any]
    counters: dict[str, int] = field(default_factory=dict)
    snapshot: int = 0
    cluster_id: str = ""

    def to_json(self) -> bytes:
        # orjson: the join state holds every pending decision's JSON, megabytes at high rates.
        return orjson.dumps(
            {
                "format_version": FORMAT_VERSION,
                "topic": self.topic,
                "cluster_id": self.cluster_id,
                "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
                "snapshot": self.snapshot,
                "counters": self.counters,
                "allocator": self.allocator,
                "join": self.join,
                "model": base64.b64encode(self.model).decode(),
            },
            option=orjson.OPT_NON_STR_KEYS,
        )

    @classmethod
    def from_json(cls, data: bytes, where: str = "checkpoint") -> Checkpoint:
        try:
            raw = orjson.loads(data)
            version = raw.get("format_version")
            if version != FORMAT_VERSION:
                raise CheckpointError(
                    f"{where}: format_version {version!r}, expected {FORMAT_VERSION}"
                )
            return cls(
                model=base64.b64decode(raw["model"]),
                topic=raw["topic"],
                offsets={int(p): int(o) for p, o in raw["offsets"].items()},
                allocator=raw["allocator"],
                join=raw["join"],
                counters=raw["counters"],
                snapshot=raw["snapshot"],
                cluster_id=raw.get("cluster_id", ""),  # absent from checkpoints before it
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{where}: not a learner checkpoint ({exc})") from exc


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically to ``path``."""
    atomic_write(path, checkpoint.to_json())


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``, or None when there is none yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return Checkpoint.from_json(data, str(path))
