"""What the ledger store costs a decision: memory, SQLite (WAL) and PostgreSQL, side by side.

``python -m bench.ledger_store [--decisions 20000] [--postgres-uri URI] [--out FILE.md]`` drives
each store the way the router does for one step, one thread, no HTTP: the decision's transaction
(read the headroom, reserve and record the decision's history row, a 1 KB compressed decision;
under the task's lock on the local stores, drafted on PostgreSQL), and the outcome (``settle``,
which returns the books after it). A task is opened every 20
decisions and closed after its last outcome. Without ``--postgres-uri`` it starts a throwaway
PostgreSQL cluster from Debian's binaries. PostgreSQL is measured twice: as configured, and with
``synchronous_commit=off`` for the session (set in the URI), which stops waiting for the WAL
flush at commit.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from bench import code_version, machine_facts
from router_service.ledger import (
    DecisionRef,
    LedgerStore,
    LedgerTransaction,
    RemoteLedgerStore,
    Reservation,
)
from router_service.ledger_memory import InMemoryLedger
from router_service.ledger_postgres import PostgresLedgerStore
from router_service.ledger_sqlite import SqliteLedgerStore
from router_service.schemas import Budget, Task

DECISIONS_PER_TASK = 20
PACKED_BYTES = 1_000
BUDGET = Budget(
    total_dollars=1_000.0,
    max_input_tokens=10**9,
    max_output_tokens=10**9,
    reserve_for_final_synthesis=1.0,
    reserve_for_human_handoff=1.0,
)


@dataclass
class Timings:
    """Seconds per call of each phase, and the wall time of the whole run."""

    reserve: list[float]
    settle: list[float]
    cycle: list[float]
    wall_s: float


def _task(task_id: str) -> Task:
    return Task(
        task_id=task_id,
        trust_domain="eng",
        task_type="bench",
        budget=BUDGET,
        planned_steps=DECISIONS_PER_TASK,
        tags={},
        status="open",
        created_at=datetime.now(UTC),
    )


def drive(store: LedgerStore, decisions: int, seed: int, prefix: str) -> Timings:
    """``decisions`` decide-then-report cycles against ``store``, timed phase by phase."""
    rng = random.Random(seed)
    packed = rng.randbytes(PACKED_BYTES)
    timings = Timings([], [], [], 0.0)
    clock = time.perf_counter
    started = clock()
    for n in range(decisions):
        task_id = f"{prefix}-{n // DECISIONS_PER_TASK}"
        if n % DECISIONS_PER_TASK == 0:
            store.open_task(_task(task_id))
        decision_id = f"{prefix}-d{n}"
        dollars = round(rng.uniform(0.001, 0.02), 6)
        t0 = clock()
        decide(store, task_id, decision_id, dollars, packed)
        t1 = clock()
        store.settle(decision_id, dollars / 2, 2_000, 200)  # it returns the books after it
        t2 = clock()
        timings.reserve.append(t1 - t0)
        timings.settle.append(t2 - t1)
        timings.cycle.append(t2 - t0)
        if n % DECISIONS_PER_TASK == DECISIONS_PER_TASK - 1:
            store.close_task(task_id)
    timings.wall_s = clock() - started
    return timings


def decide(
    store: LedgerStore, task_id: str, decision_id: str, dollars: float, packed: bytes
) -> None:
    """Reserve and record a decision as the router does: drafted on a remote store (on the
    books it knows, else read), under the task's lock otherwise or when the draft loses."""
    expires = store.now() + 900
    reservation = Reservation(
        decision_id, task_id, "m", "execution", dollars, 2_000, 450, False, expires
    )
    ref = DecisionRef(decision_id, task_id, "m", "proceed", "execution", "x", 450, dollars)
    if store.remote:
        draft = cast(RemoteLedgerStore, store).known_draft(task_id) or store.draft(task_id)
        if draft is not None:
            _fill(draft, reservation, ref, packed)
            if draft.commit():
                return
    with store.transaction(task_id) as txn:
        _fill(txn, reservation, ref, packed)


def _fill(
    txn: LedgerTransaction, reservation: Reservation, ref: DecisionRef, packed: bytes
) -> None:
    txn.books.headroom("execution")
    txn.reserve(reservation)
    txn.books.view()
    txn.record(ref, packed, is_step=True)


def endpoint_cpu(uri: str, prefix: str, tasks: int = 60, seed: int = 0) -> dict[str, float]:
    """Process CPU of the decide and outcome endpoints' own functions (no HTTP) on ``uri``.

    CPU rather than wall time, so other processes on the machine do not inflate it; of the
    whole process, since on PostgreSQL the endpoints hand the store's calls to worker threads.
    """
    import asyncio
    import json
    import logging

    from router_service.api.decisions import decide_step
    from router_service.api.outcomes import report_outcome
    from router_service.api.tasks import close_task, open_task
    from router_service.auth import Principal
    from router_service.schemas import CloseRequest, DecideRequest, OutcomeReport, TaskCreate
    from router_service.settings import Settings
    from router_service.state import RouterState

    logging.disable(logging.CRITICAL)
    principal = Principal(tenant="bench", trust_domains=frozenset({"*"}), admin=True)
    decide_cpu: list[float] = []
    outcome_cpu: list[float] = []
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        settings = Settings(
            data_dir=Path(tmp), prior_examples_per_kind=5, seed=seed, ledger_uri=uri
        )
        state = RouterState.build(settings)

        async def run() -> None:
            for k in range(tasks):
                task_id = f"{prefix}-cpu-{k}"
                body = TaskCreate(task_id=task_id, task_type="bench", budget=BUDGET)
                await open_task(state, principal, body)
                for _ in range(DECISIONS_PER_TASK):
                    tokens = rng.randint(500, 4000)
                    step = {"kind": "execution", "type": "extraction",
                            "expected_output_tokens": 300, "input_tokens": tokens}  # fmt: skip
                    request = DecideRequest(task_id=task_id, step=step, confirmed=True)
                    t0 = time.process_time()
                    answer = await decide_step(state, principal, request)
                    t1 = time.process_time()
                    decision = json.loads(answer.body)
                    report = OutcomeReport(decision_id=decision["decision_id"], success=True,
                                           quality=1.0, input_tokens=step["input_tokens"],
                                           output_tokens=200)  # fmt: skip
                    t2 = time.process_time()
                    await report_outcome(state, principal, report)
                    t3 = time.process_time()
                    if k >= tasks // 6:  # the first tasks warm up
                        decide_cpu.append(t1 - t0)
                        outcome_cpu.append(t3 - t2)
                await close_task(state, principal, task_id, CloseRequest(success=True, quality=1))

        try:
            asyncio.run(run())
        finally:
            state.close()
    return {
        "decide_median_us": statistics.median(decide_cpu) * 1e6,
        "decide_mean_us": statistics.mean(decide_cpu) * 1e6,
        "outcome_median_us": statistics.median(outcome_cpu) * 1e6,
        "outcome_mean_us": statistics.mean(outcome_cpu) * 1e6,
    }


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


def summarise(name: str, timings: Timings) -> dict[str, float | str]:
    row: dict[str, float | str] = {
        "store": name,
        "decisions_per_s": len(timings.cycle) / timings.wall_s,
    }
    for phase in ("reserve", "settle", "cycle"):
        values = getattr(timings, phase)
        row[f"{phase}_p50_us"] = _percentile(values, 50) * 1e6
        row[f"{phase}_p99_us"] = _percentile(values, 99) * 1e6
    return row


@contextlib.contextmanager
def _postgres(uri: str | None) -> Iterator[tuple[str, str]]:
    """A PostgreSQL URI and where it came from: the given one, or a throwaway cluster."""
    if uri is not None:
        yield uri, "given by --postgres-uri"
        return
    from tests.postgres_cluster import PostgresCluster  # the suite's cluster helper

    cluster = PostgresCluster().start()
    try:
        yield cluster.new_database(), "a throwaway cluster from Debian's binaries, defaults"
    finally:
        cluster.stop()


def run(decisions: int, seed: int, postgres_uri: str | None) -> tuple[list[dict], str]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        stores: list[tuple[str, LedgerStore]] = [
            ("memory", InMemoryLedger()),
            ("sqlite (WAL, synchronous=NORMAL)", SqliteLedgerStore(Path(tmp) / "l.sqlite3")),
        ]
        with _postgres(postgres_uri) as (uri, where):
            stores.append(("postgresql", PostgresLedgerStore(uri)))
            relaxed = f"{uri}{'&' if '?' in uri else '?'}options=-c%20synchronous_commit%3Doff"
            stores.append(("postgresql, synchronous_commit=off", PostgresLedgerStore(relaxed)))
            for n, (name, store) in enumerate(stores):
                try:
                    drive(store, min(decisions, 500), seed, f"s{n}-warmup")
                    rows.append(summarise(name, drive(store, decisions, seed, f"s{n}-run")))
                finally:
                    store.close()
                print(_row_text(rows[-1]), flush=True)
            endpoint_uris = ["memory://", f"sqlite:///{tmp}/endpoints.sqlite3", uri, relaxed]
            for n, (row, endpoint_uri) in enumerate(zip(rows, endpoint_uris, strict=True)):
                row.update(endpoint_cpu(endpoint_uri, f"s{n}", seed=seed))
                print(f"  endpoints: {row}", flush=True)
    return rows, where


def _row_text(row: dict) -> str:
    return (
        f"{row['store']}: {row['decisions_per_s']:.0f} decisions/s; cycle p50 "
        f"{row['cycle_p50_us']:.0f} us, p99 {row['cycle_p99_us']:.0f} us"
    )


def markdown(
    rows: list[dict], decisions: int, seed: int, where: str, command: str, facts: dict[str, str]
) -> str:
    lines = [
        "# Ledger store: what it costs a decision",
        "",
        f"- Command: `{command}`",
        f"- Code: {code_version()}",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['python']} on {facts['os']}; "
        f"load average {facts['load']} at the start; other processes were not stopped",
        f"- PostgreSQL: {where}, on loopback, psycopg 3 with a pool",
        f"- Workload: {decisions} decide-then-report cycles per store after a warm-up, one "
        f"thread, a task opened every {DECISIONS_PER_TASK} decisions and closed after its last "
        f"outcome; seed {seed}",
        "",
        "Phases of one cycle: **reserve** = the decision's transaction (read the headroom, "
        "commit the reservation with the decision's history row, a "
        f"{PACKED_BYTES}-byte compressed decision: under the task's lock on the local stores, "
        "drafted on PostgreSQL as the router does); **settle** = the outcome (settle, which "
        "returns the books after it). Times in microseconds.",
        "",
        "| store | decisions/s | reserve p50 | reserve p99 "
        "| settle p50 | settle p99 | cycle p50 | cycle p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["store"], f"{row['decisions_per_s']:.0f}"]
        for phase in ("reserve", "settle", "cycle"):
            cells += [f"{row[f'{phase}_p50_us']:.0f}", f"{row[f'{phase}_p99_us']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The endpoints on each store",
        "",
        "The decide and outcome endpoints' own functions (`decide_step`, `report_outcome`; no "
        "HTTP, the real policy, governor, spool and activity log) on a fresh router state per "
        f"store, {DECISIONS_PER_TASK} decisions per task, the first sixth of the tasks as "
        "warm-up. CPU time of the router process per call in microseconds, all its threads "
        "(CPU, not wall time, so the other processes on the machine do not inflate it; "
        "waiting for PostgreSQL is not in it).",
        "",
        "| store | decide median | decide mean | outcome median | outcome mean |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["store"]] + [
            f"{row[k]:.0f}"
            for k in ("decide_median_us", "decide_mean_us", "outcome_median_us", "outcome_mean_us")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--postgres-uri", help="an existing database (else a throwaway one)")
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    args = parser.parse_args(argv)
    facts = machine_facts()  # the load average at the start
    rows, where = run(args.decisions, args.seed, args.postgres_uri)
    if args.out is not None:
        command = shlex.join(["python", "-m", "bench.ledger_store", *(argv or sys.argv[1:])])
        args.out.write_text(markdown(rows, args.decisions, args.seed, where, command, facts))


if __name__ == "__main__":
    main()
