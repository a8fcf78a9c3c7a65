"""Checkpoints: atomic replacement, round trip, and refusing foreign files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from learner.checkpoint import Checkpoint, atomic_write, read_checkpoint, write_checkpoint
from learner.settings import CheckpointError


def checkpoint(offset: int) -> Checkpoint:
    return Checkpoint(
        model=bytes(range(256)) * 4,
        topic="events",
        offsets={0: offset, 3: 7},
        allocator={"version": 1, "domains": {}},
        join={"watermark": None},
        counters={"consumed": offset},
        snapshot=2,
    )


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    assert read_checkpoint(path) is None
    write_checkpoint(path, checkpoint(41))
    assert read_checkpoint(path) == checkpoint(41)


def test_a_crash_while_writing_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cp.json"
    write_checkpoint(path, checkpoint(1))

    def crash(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_checkpoint(path, checkpoint(2))
    assert read_checkpoint(path) == checkpoint(1)
    assert os.listdir(tmp_path) == ["cp.json"]  # no temporary file left behind


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    old_inode = None
    for offset in range(5):
        write_checkpoint(path, checkpoint(offset))
        inode = path.stat().st_ino
        assert inode != old_inode  # a new file renamed into place, not rewritten in place
        old_inode = inode
        assert read_checkpoint(path) == checkpoint(offset)


def test_atomic_write_creates_the_directory(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a" / "b.json", b"{}")
    assert (tmp_path / "a" / "b.json").read_bytes() == b"{}"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not json", "not a learner checkpoint"),
        (b'{"format_version": 99}', "format_version 99, expected 1"),
        (b'{"format_version": 1}', "not a learner checkpoint"),
    ],
)
def test_foreign_files_are_refused(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "cp.json"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint(path)
