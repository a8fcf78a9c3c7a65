"""Batch writes are bulk inserts, not row-by-row: a loose floor that catches a regression."""

from __future__ import annotations

from pathlib import Path

from feature_store.throughput import measure_write_throughput


def test_thousand_event_batches_write_quickly(tmp_path: Path) -> None:
    rate = measure_write_throughput(tmp_path / "f.duckdb", batches=5, batch_size=1_000)
    # Measured 20,000-35,000 events/s on the 2-core dev machine; the floor only catches regressions.
    assert rate > 3_000, f"{rate:.0f} events/s"
