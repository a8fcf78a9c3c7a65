"""Measure batch write throughput of the DuckDB store: ``python -m feature_store.throughput``."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from feature_store.examples import mixed_events
from feature_store.store import DuckDBFeatureStore


def measure_write_throughput(path: Path, *, batches: int, batch_size: int) -> float:
    """Events per second writing ``batches`` fresh batches of mixed events into ``path``."""
    prepared = [mixed_events(batch_size, seed=i, prefix=f"b{i}") for i in range(batches)]
    with DuckDBFeatureStore(path) as store:
        started = time.perf_counter()
        for batch in prepared:
            store.write_events(batch)
        elapsed = time.perf_counter() - started
    return batches * batch_size / elapsed


def main() -> None:
    """Print events/s for the given batch size and count."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rate = measure_write_throughput(
            Path(tmp) / "features.duckdb", batches=args.batches, batch_size=args.batch_size
        )
    print(f"{args.batches} batches x {args.batch_size} mixed events: {rate:,.0f} events/s")


if __name__ == "__main__":
    main()
