"""Rolling-feature snapshots: round trip, atomic replacement, malformed files, VW features."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from feature_store import snapshot as snapshot_module
from feature_store.errors import SnapshotError, SnapshotMissing
from feature_store.examples import EPOCH
from feature_store.snapshot import (
    SNAPSHOT_FORMAT,
    RollingFeature,
    load_rolling_snapshot,
    recent_action_features,
    write_rolling_snapshot,
)
from learner.vw_model import example_lines


def feature(model: str = "small-model", n: int = 10, **overrides: object) -> RollingFeature:
    values: dict[str, object] = {
        "model": model,
        "step_type": "planning",
        "trust_domain": "eng",
        "n": n,
        "successes": n // 2,
        "success_rate": 0.5,
        "mean_quality": 0.7,
        "mean_cost_dollars": 0.01,
        "mean_latency_s": 1.5,
        "n_total": n,
        "last_outcome_at": EPOCH + timedelta(minutes=5),
        "window": 100,
    }
    values.update(overrides)
    return RollingFeature(**values)  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path) -> None:
    features = [feature(), feature("large-model", mean_latency_s=None)]
    path = tmp_path / "rolling.json"
    write_rolling_snapshot(features, path)
    assert load_rolling_snapshot(path) == {f.key: f for f in features}
    assert list(tmp_path.iterdir()) == [path]


def test_reader_never_sees_a_half_written_file(tmp_path: Path) -> None:
    path = tmp_path / "rolling.json"
    versions = [[feature(n=i) for _ in range(200)] for i in (1, 2)]
    write_rolling_snapshot(versions[0], path)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            write_rolling_snapshot(versions[i % 2], path)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    seen: set[int] = set()
    deadline = time.monotonic() + 1.0
    try:
        while time.monotonic() < deadline and len(seen) < 2:
            loaded = load_rolling_snapshot(path)  # raises on a torn file
            seen.add(next(iter(loaded.values())).n)
    finally:
        stop.set()
        thread.join()
    assert seen <= {1, 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rolling.json"]


def test_failed_write_keeps_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rolling.json"
    write_rolling_snapshot([feature(n=1)], path)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(snapshot_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_rolling_snapshot([feature(n=2)], path)
    monkeypatch.undo()
    assert next(iter(load_rolling_snapshot(path).values())).n == 1
    assert list(tmp_path.iterdir()) == [path]


def test_missing_snapshot_is_retriable(tmp_path: Path) -> None:
    with pytest.raises(SnapshotMissing, match="no rolling-feature snapshot") as info:
        load_rolling_snapshot(tmp_path / "absent.json")
    assert info.value.retriable


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "field 'format' is 'list'"),
        (json.dumps({"format": "other/9", "features": []}), "field 'format' is 'other/9'"),
        (json.dumps({"format": SNAPSHOT_FORMAT}), "features.: Input should be a valid list"),
        (
            json.dumps({"format": SNAPSHOT_FORMAT, "features": [{"model": "m"}]}),
            r"features\.0\.step_type: Field required",
        ),
    ],
)
def test_malformed_snapshots_name_the_problem(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "rolling.json"
    path.write_text(content)
    with pytest.raises(SnapshotError, match=match) as info:
        load_rolling_snapshot(path)
    assert not info.value.retriable


def test_recent_action_features_for_vw() -> None:
    recent = recent_action_features(feature(n=10, mean_cost_dollars=0.01))["recent"]
    assert recent["success_rate"] == 0.5
    assert recent["mean_cost_log"] == pytest.approx(-2 / 6, abs=1e-4)
    assert recent["mean_latency_s"] == 1.5
    assert recent["n_log"] == pytest.approx(0.2398, abs=1e-4)
    no_latency = recent_action_features(replace(feature(), mean_latency_s=None))["recent"]
    assert "mean_latency_s" not in no_latency
    assert recent_action_features(None) == {"recent": {"unseen": True}}
    lines = example_lines({"step": {"kind": "control"}}, [recent_action_features(feature())])
    assert lines[1].startswith("|r success_rate:0.5 mean_cost_log:")
