"""Service performance with the whole loop on: decisions, learner, policy updates, memory.

``python -m bench.service_perf [--quick] [--out docs/benchmarks]`` measures, each beside a
baseline measured in the same run: decision latency and peak throughput over HTTP against
``budget-router up`` (ledger, spool and event publishing on, learner consuming) beside the
minimal FastAPI app; learner throughput from the broker into VW and DuckDB beside VW alone and a
bare kafka-python consumer; the delay from an outcome to a new policy snapshot served; and the
resident memory of the router and the learner over many decisions beside a bare interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import (
    BENCH_ADMIN_KEY,
    REPO_ROOT,
    BenchError,
    code_version,
    machine_facts,
    server_process,
)
from bench.decision_latency import (
    TASK_TYPES,
    TRUST_DOMAINS,
    BenchConfig,
    baseline_command,
    measure_baseline,
    measure_router,
    router_command,
    task_body,
    task_steps,
)
from bench.http_load import run
from bench.stack import FAST_CONSUMER_ENV, StackConfig, environment, full_stack
from router_service.catalog import Catalog, ModelSpec
from router_service.cpu_latency import hold_cpu_latency
from router_service.embedded_broker import EmbeddedBroker, ensure_topics, free_port
from router_service.errors import ConfigError
from router_service.events import DecisionEvent, OutcomeEvent, TaskClosedEvent, encode_event
from router_service.features import cost_features, model_features, shared_features
from router_service.model_facts import SentFacts, facts_id
from router_service.realtime import SETTING as REALTIME_SETTING
from router_service.schemas import DecideRequest

P99_TARGET_MS = 2.0
THROUGHPUT_TARGET_RATIO = 0.5
LEARNER_TARGET_EVENTS_S = 20_000.0
POLICY_DELAY_TARGET_S = 5.0
MEMORY_GROWTH_TARGET_MB = 50.0  # from 100k to the last count reached (1M when it gets there)
EPSILON = 0.05
CHILD_IMPORTS = {  # what each memory child imports beyond this module's own imports
    "router": (
        "router_service.api.decisions",
        "router_service.api.outcomes",
        "router_service.api.tasks",
        "router_service.auth",
        "router_service.settings",
        "router_service.state",
    ),
    "learner": (
        "feature_store.store",
        "learner.consumer",
        "learner.online",
        "learner.service",
        "router_service.settings",
    ),
}
STEPS_PER_TASK = 5  # learner workload: 5 decisions + 5 outcomes + 1 task close = 11 events
AGENT_STEPS = 20  # memory workload: decisions per task
AGENTS = 16  # memory workload: tasks advancing together
EVENT_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "budget-router.events"
JSON = {"content-type": "application/json"}
# What `budget-router up` uses by default for publication and hot swap (bench.stack speeds them).
DEFAULT_PUBLISH_ENV = {
    "BUDGET_ROUTER_LEARNER_PUBLISH_INTERVAL_SECONDS": "1.0",
    "BUDGET_ROUTER_MODEL_POLL_SECONDS": "1.0",
    "BUDGET_ROUTER_LEARNER_CHECKPOINT_EVERY_SECONDS": "5.0",
}


@dataclass(frozen=True)
class PerfConfig:
    """Sizes of one run; ``quick`` is a smoke run of the harness."""

    seed: int = 0
    quick: bool = False
    latency: BenchConfig = field(default_factory=BenchConfig)
    learner_events: int = 55_000
    policy_repeats: int = 10
    memory_points: tuple[int, ...] = (0, 100_000, 200_000, 500_000, 1_000_000)
    memory_budget_s: float = 480.0
    realtime_priority: int | None = None  # routers and baseline under SCHED_FIFO at this

    @classmethod
    def quick_run(cls) -> PerfConfig:
        return cls(
            quick=True,
            latency=BenchConfig.quick_run(),
            learner_events=2_200,
            policy_repeats=2,
            memory_points=(0, 1_000, 2_000),
            memory_budget_s=60.0,
        )


# -- workload: events built like the router builds them -------------------------------------


def task_events(
    task_no: int, rng: random.Random, models: list[ModelSpec]
) -> list[tuple[bytes, bytes]]:
    """One task's (key, value) events: decision + outcome per step, then the task's close.

    Features come from ``router_service.features`` over the default catalog, the pmf is
    epsilon-greedy over every catalog model, and ids and event times are seeded. Catalog
    facts go by reference, carried once per task, as the router sends them.
    """
    task_id = f"perf-{task_no}"
    facts = {m.id: model_features(m) for m in models}
    refs = {m.id: facts_id(facts[m.id]) for m in models}
    sent = SentFacts()
    domain, task_type = rng.choice(TRUST_DOMAINS), rng.choice(TASK_TYPES)
    at = EVENT_EPOCH + timedelta(seconds=task_no)
    events: list[Any] = []
    for index, body in enumerate(task_steps(task_id, STEPS_PER_TASK, rng)):
        request = DecideRequest.model_validate_json(body)
        step = request.step
        costs = [m.token_cost(step.input_tokens, step.expected_output_tokens) for m in models]
        pmf = [EPSILON / len(models)] * len(models)
        pmf[rng.randrange(len(models))] += 1 - EPSILON
        chosen = rng.choices(range(len(models)), weights=pmf)[0]
        cost = costs[chosen] or 0.0005
        decision_id = f"dec_{task_id}_{index}"
        events.append(
            DecisionEvent(
                event_id=f"d-{task_id}-{index}",
                task_id=task_id,
                occurred_at=at,
                decision_id=decision_id,
                trust_domain=domain,
                task_type=task_type,
                step_kind=step.kind,
                step_type=step.type,
                input_tokens=step.input_tokens,
                expected_output_tokens=step.expected_output_tokens,
                granted_max_output_tokens=int(step.expected_output_tokens * 1.5),
                optional=step.optional,
                actions=[m.id for m in models],
                pmf=pmf,
                chosen_index=chosen,
                model=models[chosen].id,
                propensity=pmf[chosen],
                estimated_costs=costs,
                shared_features=shared_features(
                    step,
                    request.signals,
                    trust_domain=domain,
                    task_type=task_type,
                    tags={},
                    context=request.context,
                ),
                action_features=[
                    {"recent": {"unseen": True}, "cost": cost_features(c)} for c in costs
                ],
                model_refs=[refs[m.id] for m in models],
                model_facts={refs[m.id]: facts[m.id] for m in models},
                policy_version="bench",
                reserved_dollars=cost * 1.5,
                total_dollars=1.0,
            )
        )
        success = rng.random() < 0.7
        events.append(
            OutcomeEvent(
                event_id=f"o-{task_id}-{index}",
                task_id=task_id,
                occurred_at=at + timedelta(milliseconds=500),
                decision_id=decision_id,
                model=models[chosen].id,
                step_kind=step.kind,
                step_type=step.type,
                trust_domain=domain,
                success=success,
                quality=round(rng.uniform(0.6, 1.0) if success else rng.uniform(0, 0.3), 3),
                input_tokens=step.input_tokens,
                output_tokens=step.expected_output_tokens,
                cost_dollars=cost,
                latency_ms=rng.uniform(200, 5_000),
            )
        )
    events.append(
        TaskClosedEvent(
            event_id=f"c-{task_id}",
            task_id=task_id,
            occurred_at=at + timedelta(milliseconds=900),
            trust_domain=domain,
            success=rng.random() < 0.6,
            quality=round(rng.random(), 3),
            spent_dollars=sum(e.cost_dollars for e in events[1::2]),
            total_dollars=1.0,
            steps=STEPS_PER_TASK,
            decision_ids=[e.decision_id for e in events[0::2]],
        )
    )
    published: list[Any] = []
    for event in events:
        if isinstance(event, DecisionEvent):
            sent.publish(event, published.append)
        else:
            published.append(event)
    return [(task_id.encode(), encode_event(e)) for e in published]


def event_stream(count: int, seed: int) -> Iterator[tuple[bytes, bytes]]:
    """``count`` events (rounded up to whole tasks), seeded."""
    rng = random.Random(seed)
    models = list(Catalog.from_file(None).snapshot().values())
    produced, task_no = 0, 0
    while produced < count:
        for item in task_events(task_no, rng, models):
            produced += 1
            yield item
        task_no += 1


# -- 1. decision latency and throughput over HTTP, full stack on ------------------------------


def http_part(config: PerfConfig, work: Path) -> dict[str, Any]:
    """bench.decision_latency's phases against ``budget-router up``, then the baseline app.

    The router runs on the embedded (SQLite) ledger, then again on a PostgreSQL ledger (the
    store router replicas share), then as two replicas on one PostgreSQL ledger, when Debian's
    PostgreSQL server binaries are installed.
    """
    embedded = StackConfig(
        data_dir=work / "http-stack", seed=config.seed, extra_env=DEFAULT_PUBLISH_ENV
    )
    router, learner = _router_run(embedded, config)
    alone = _router_alone_run(config, work)
    shared = _shared_store_run(config, work)
    replicas = _replicas_run(config, work)
    port = free_port()
    command = baseline_command(port)
    if config.realtime_priority is not None:  # as the routers run (realtime_priority)
        command = ["chrt", "--fifo", str(config.realtime_priority), *command]
    with server_process(command, port, work / "baseline.log"):
        baseline = run(measure_baseline(port, config.latency))
    ratio = router.peak.requests_per_s / baseline.peak.requests_per_s
    return {
        "stack": "budget-router up",
        "router": {"light": asdict(router.light), "peak": asdict(router.peak)},
        "router_alone": alone,
        "router_postgres": shared,
        "router_postgres_replicas": replicas,
        "baseline": {"light": asdict(baseline.light), "peak": asdict(baseline.peak)},
        "tasks_opened": router.tasks_opened,
        "learner_consumed_after": learner.get("consumed"),
        "throughput_ratio": ratio,
    }


def _router_run(stack_config: StackConfig, config: PerfConfig) -> tuple[Any, dict[str, Any]]:
    """The decision phases against one full stack; the learner's status once it caught up."""
    with full_stack(stack_config) as stack:
        router = run(measure_router(stack.port, config.latency))
        learner = stack.wait_learned(0, timeout_s=0.0)
        deadline = time.monotonic() + 20
        sent = router.light.count + router.peak.count
        while time.monotonic() < deadline and learner.get("consumed", 0) < sent:
            time.sleep(0.2)
            learner = stack.learner_status()
    return router, learner


def _router_alone_run(config: PerfConfig, work: Path) -> dict[str, Any]:
    """The same phases against ``budget-router serve`` and a broker, with no learner running.

    Everything else is as in the full stack (ledger, spool, events to the broker, logs,
    metrics): what the router's own path costs when the learner is on other cores.
    """
    broker = EmbeddedBroker(log_path=work / "alone-broker.log").start()
    port = free_port()
    try:
        env = StackConfig(
            data_dir=work / "alone",
            seed=config.seed,
            extra_env={"BUDGET_ROUTER_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap},
        ).env()
        with (
            environment(env),
            server_process(
                router_command(port, work / "alone"), port, work / "alone.log", ready_timeout_s=60.0
            ),
        ):
            router = run(measure_router(port, config.latency))
    finally:
        broker.stop()
    return {"light": asdict(router.light), "peak": asdict(router.peak)}


def _shared_store_run(config: PerfConfig, work: Path) -> dict[str, Any] | None:
    """The same phases with ``BUDGET_ROUTER_LEDGER_URI`` on a throwaway PostgreSQL server."""
    from tests.postgres_cluster import PostgresCluster

    try:
        cluster = PostgresCluster().start()
    except FileNotFoundError as exc:
        return {"skipped": str(exc)}
    try:
        stack_config = StackConfig(
            data_dir=work / "http-stack-postgres",
            seed=config.seed,
            extra_env={**DEFAULT_PUBLISH_ENV, "BUDGET_ROUTER_LEDGER_URI": cluster.new_database()},
        )
        router, _ = _router_run(stack_config, config)
    finally:
        cluster.stop()
    return {"light": asdict(router.light), "peak": asdict(router.peak)}


def _replicas_run(config: PerfConfig, work: Path) -> dict[str, Any]:
    """The same phases over two routers sharing one PostgreSQL ledger and one broker.

    One is ``budget-router up`` (with the learner), the other a second ``serve`` on the same
    ledger and broker; tasks open on the first, and the load's connections alternate between
    them. What a second router worker adds on this machine.
    """
    from tests.postgres_cluster import PostgresCluster

    try:
        cluster = PostgresCluster().start()
    except FileNotFoundError as exc:
        return {"skipped": str(exc)}
    broker = EmbeddedBroker(log_path=work / "replicas-broker.log").start()
    try:
        stack_config = StackConfig(
            data_dir=work / "replicas-up",
            seed=config.seed,
            extra_env={
                **DEFAULT_PUBLISH_ENV,
                "BUDGET_ROUTER_LEDGER_URI": cluster.new_database(),
                "BUDGET_ROUTER_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            },
        )
        second = free_port()
        with (
            full_stack(stack_config) as stack,  # sets the environment the second router gets
            server_process(
                router_command(second, work / "replicas-second"),
                second,
                work / "replicas-second.log",
                ready_timeout_s=60.0,
            ),
        ):
            router = run(measure_router([stack.port, second], config.latency))
    finally:
        broker.stop()
        cluster.stop()
    return {"replicas": 2, "light": asdict(router.light), "peak": asdict(router.peak)}


# -- 2. learner throughput ------------------------------------------------------------------


def learner_part(config: PerfConfig, work: Path) -> dict[str, Any]:
    """Events/s from the broker into VW and DuckDB, beside VW alone and a bare consumer."""
    from kafka import KafkaProducer

    events = list(event_stream(config.learner_events, config.seed))
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, [TOPIC, "budget-router.dead-letter"])
        producer = KafkaProducer(
            bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=512 * 1024
        )
        started = time.perf_counter()
        for key, value in events:
            producer.send(TOPIC, value, key=key)
        producer.flush()
        produce_s = time.perf_counter() - started
        producer.close()
        consumer_s = bare_consumer(broker.bootstrap, len(events))
        learner = run_learner_process(broker.bootstrap, len(events), work / "learner-data")
    vw_s, learns = vw_alone([v for _, v in events], config.seed)
    batched_s, _ = vw_alone([v for _, v in events], config.seed, batched=True)
    return {
        "events": len(events),
        "decisions": learns,
        "produce_events_per_s": len(events) / produce_s,
        "learner": learner,
        "vw_alone": {"learn_calls": learns, "seconds": vw_s, "events_per_s": len(events) / vw_s},
        "vw_learn_many": {"seconds": batched_s, "events_per_s": len(events) / batched_s},
        "bare_consumer": {"seconds": consumer_s, "events_per_s": len(events) / consumer_s},
    }


def bare_consumer(bootstrap: str, count: int) -> float:
    """Seconds for a plain kafka-python consumer (no group, no CRC check) to read ``count``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        check_crcs=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        max_poll_records=2_000,
    )
    try:
        partition = TopicPartition(TOPIC, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        started, seen = time.perf_counter(), 0
        deadline = started + 120
        while seen < count and time.perf_counter() < deadline:
            seen += sum(len(batch) for batch in consumer.poll(timeout_ms=200).values())
        if seen < count:
            raise BenchError(f"bare consumer read {seen} of {count} events in 120 s")
        return time.perf_counter() - started
    finally:
        consumer.close()


def run_learner_process(bootstrap: str, count: int, data_dir: Path) -> dict[str, Any]:
    """``budget-router learn`` on the pre-filled topic, timed on its status file."""
    from learner.service import read_status

    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **FAST_CONSUMER_ENV,
        "BUDGET_ROUTER_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "BUDGET_ROUTER_ADMIN_KEY": BENCH_ADMIN_KEY,
        "PYTHONPATH": str(REPO_ROOT),
    }
    script = Path(sys.executable).parent / "budget-router"
    samples: list[tuple[float, int]] = []
    with open(data_dir / "learner.log", "wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            [str(script), "learn", "--data-dir", str(data_dir)],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = started + max(120.0, count / 500)
            consumed = 0
            while consumed < count and time.perf_counter() < deadline:
                if process.poll() is not None:
                    tail = Path(log.name).read_text(errors="replace")[-2_000:]
                    raise BenchError(f"learner exited with {process.returncode}:\n{tail}")
                status = read_status(data_dir) or {}
                consumed = status.get("consumed", 0)
                if not samples or samples[-1][1] != consumed:
                    samples.append((time.perf_counter() - started, consumed))
                time.sleep(0.02)
            final = read_status(data_dir) or {}
            rss_kb = vm_rss_kb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
    if consumed < count:
        raise BenchError(f"learner consumed {consumed} of {count} events before the deadline")
    first = next((s for s in samples if s[1] > 0), samples[-1])
    last = samples[-1]
    steady = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else 0.0
    return {
        "wall_s_from_start": last[0],
        "events_per_s_from_start": count / last[0],
        "first_status_s": first[0],
        "first_status_consumed": first[1],
        "events_per_s_steady": steady,
        "learned_steps": final.get("learned_steps"),
        "model_updates": final.get("model_updates"),
        "dead_lettered": final.get("dead_lettered"),
        "snapshot": final.get("snapshot"),
        "rss_kb_at_end": rss_kb,
        "status_samples": len(samples),
    }


def vw_alone(values: list[bytes], seed: int, batched: bool = False) -> tuple[float, int]:
    """Seconds for one ``VWPolicyModel.learn`` per decision event (or one ``learn_many`` over
    all of them, as the learner does per poll), and how many updates."""
    from learner.decoder import EventDecoder
    from learner.vw_model import ExplorationSpec, LabeledExample, VWPolicyModel

    decoded = map(EventDecoder().decode, values)
    decisions = [e for e in decoded if e.type == "decision"]
    model = VWPolicyModel.create(ExplorationSpec("epsilon", EPSILON), seed=seed)
    rng = random.Random(seed)
    costs = [-rng.random() for _ in decisions]
    examples = [
        LabeledExample(
            d.shared_features, d.action_features, d.chosen_index, cost, max(d.propensity, 0.05)
        )
        for d, cost in zip(decisions, costs, strict=True)
    ]
    started = time.perf_counter()
    if batched:
        model.learn_many(examples)
    else:
        for example in examples:
            model.learn(*example)
    elapsed = time.perf_counter() - started
    model.close()
    return elapsed, len(decisions)


# -- 3. outcome-to-policy delay ---------------------------------------------------------------


def policy_delay_part(config: PerfConfig, work: Path) -> dict[str, Any]:
    """Post an outcome and close its task; time until /readyz serves another policy version."""
    stack_config = StackConfig(
        data_dir=work / "delay-stack", seed=config.seed, extra_env=DEFAULT_PUBLISH_ENV
    )
    rng = random.Random(config.seed)
    delays: list[float] = []
    with full_stack(stack_config) as stack, stack.client() as client:
        for n in range(config.policy_repeats):
            task_id = f"delay-{n}"
            client.post(
                "/v1/tasks", content=task_body(task_id, rng), headers=JSON
            ).raise_for_status()
            decide = client.post("/v1/decide", content=task_steps(task_id, 1, rng)[0], headers=JSON)
            decision = decide.raise_for_status().json()
            before = client.get("/readyz").json()["policy_version"]
            started = time.perf_counter()
            client.post(
                "/v1/outcomes",
                json={
                    "decision_id": decision["decision_id"],
                    "success": True,
                    "quality": 0.9,
                    "input_tokens": decision["max_input_tokens"],
                    "output_tokens": decision["max_output_tokens"] // 2,
                    "cost_dollars": decision["reserved_dollars"] / 2,
                },
            ).raise_for_status()
            client.post(f"/v1/tasks/{task_id}/close", json={"success": True, "quality": 0.9})
            version = before
            while version == before and time.perf_counter() - started < 60:
                time.sleep(0.02)
                version = client.get("/readyz").json()["policy_version"]
            if version == before:
                raise BenchError(f"policy_version stayed {before!r} for 60 s after an outcome")
            delays.append(time.perf_counter() - started)
    ordered = sorted(delays)
    return {
        "repeats": len(delays),
        "delays_s": delays,
        "median_s": ordered[len(ordered) // 2],
        "max_s": ordered[-1],
        "env": DEFAULT_PUBLISH_ENV,
    }


# -- 4. memory over many decisions / events (child processes) ---------------------------------


def vm_rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no VmRSS line")


def _pause(count: int, started: float) -> bool:
    """Tell the parent we reached ``count``; it reads our RSS and says go on or stop."""
    print(json.dumps({"at": count, "elapsed_s": time.perf_counter() - started}), flush=True)
    return sys.stdin.readline().strip() == "go"


def _router_child(data_dir: Path, points: list[int], seed: int) -> None:
    """Drive the endpoints' own functions (no HTTP) over one RouterState, 16 agents at once."""
    from router_service.api.decisions import decide_step
    from router_service.api.outcomes import report_outcome
    from router_service.api.tasks import close_task, open_task
    from router_service.auth import Principal
    from router_service.schemas import CloseRequest, DecideRequest, OutcomeReport, TaskCreate
    from router_service.settings import Settings
    from router_service.state import RouterState

    logging.disable(logging.CRITICAL)
    state = RouterState.build(Settings(data_dir=data_dir, seed=seed))
    principal = Principal(tenant="bench", trust_domains=frozenset({"*"}), admin=True)
    rng = random.Random(seed)
    gc.collect()
    gc.freeze()
    decided = 0

    async def agent(task_no: int) -> None:
        nonlocal decided
        task_id = f"mem-{task_no}"
        body = TaskCreate.model_validate_json(task_body(task_id, rng))
        await open_task(state, principal, body)
        for step in task_steps(task_id, AGENT_STEPS, rng):
            answer = await decide_step(state, principal, DecideRequest.model_validate_json(step))
            decided += 1
            decision = _fields(answer)
            if decision["model"] is not None:
                report = OutcomeReport(
                    decision_id=decision["decision_id"],
                    success=rng.random() < 0.8,
                    quality=round(rng.random(), 3),
                    input_tokens=decision["max_input_tokens"],
                    output_tokens=decision["max_output_tokens"] // 2,
                    cost_dollars=decision["reserved_dollars"] / 2,
                )
                await report_outcome(state, principal, report)
        await close_task(state, principal, task_id, CloseRequest(success=True, quality=0.8))

    async def drive() -> None:
        started, task_no = time.perf_counter(), 0
        for point in points:
            while decided < point:
                await asyncio.gather(*(agent(task_no + k) for k in range(AGENTS)))
                task_no += AGENTS
            if not _pause(decided, started):
                return

    asyncio.run(drive())
    state.close()


def _fields(answer: Any) -> dict[str, Any]:
    """An endpoint's answer as a dict: a JSON ``Response`` body or a pydantic model."""
    body = getattr(answer, "body", None)
    return json.loads(body) if body is not None else answer.model_dump()  # type: ignore[no-any-return]


def _learner_child(data_dir: Path, points: list[int], seed: int) -> None:
    """The deployed learner (join, VW, DuckDB, snapshots) fed seeded events in-process."""
    from feature_store.store import DuckDBFeatureStore
    from learner.collector import collect_between_polls
    from learner.consumer import Record
    from learner.online import learner_settings, publishing_hook
    from learner.service import Learner
    from router_service.settings import Settings

    logging.disable(logging.CRITICAL)
    settings = Settings(data_dir=data_dir, seed=seed)
    config = learner_settings(settings, "unused:9092")
    store = DuckDBFeatureStore(
        config.feature_store_path, memory_limit=config.feature_store_memory_limit
    )
    learner = Learner.open(
        config,
        dead_letters=_DroppedLetters(),
        router_settings=settings,
        store=store,
        on_model_updated=publishing_hook(settings, store),
    )
    stream = event_stream(points[-1], seed)
    offset, started = 0, time.perf_counter()
    with collect_between_polls() as after_poll:  # as Learner.run collects
        for point in points:
            while offset < point:
                batch = [
                    Record(0, offset + i, value)
                    for i, (_, value) in zip(
                        range(min(2_000, point - offset)), stream, strict=False
                    )
                ]
                learner.process(batch, TOPIC)
                learner.after_batch(None, idle=False)
                after_poll()
                offset += len(batch)
            if not _pause(offset, started):
                break
    learner.close()
    store.close()


class _DroppedLetters:
    """A dead-letter sink that counts and forgets (the memory run has no broker)."""

    def __init__(self) -> None:
        self.count = 0

    def send(self, payload: str, reason: str, source: dict[str, Any] | None) -> None:
        self.count += 1

    def flush(self) -> None:
        return None


def _bare_child(kind: str) -> None:
    """The same imports as the ``kind`` child, and no work."""
    for module in CHILD_IMPORTS[kind]:
        importlib.import_module(module)
    _pause(0, time.perf_counter())


def memory_run(kind: str, points: tuple[int, ...], budget_s: float, work: Path) -> list[dict]:
    """RSS of a child process at each point it reaches within ``budget_s``."""
    data_dir = work / f"memory-{kind}"
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bench.service_perf", "--child", kind]
    command += ["--points", ",".join(map(str, points)), "--data-dir", str(data_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    rows: list[dict] = []
    with subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        for line in process.stdout:
            mark = json.loads(line)
            rows.append({**mark, "rss_kb": vm_rss_kb(process.pid)})
            remaining = [p for p in points if p > mark["at"]]
            rate = mark["at"] / mark["elapsed_s"] if mark["at"] else None
            fits = bool(remaining) and (
                rate is None or mark["elapsed_s"] + (remaining[0] - mark["at"]) / rate <= budget_s
            )
            process.stdin.write("go\n" if fits else "stop\n")
            process.stdin.flush()
            if not fits:
                break
        process.stdin.close()
        process.wait(timeout=120)
    if process.returncode != 0:
        raise BenchError(f"memory child {kind!r} exited with {process.returncode}")
    return rows


def memory_part(config: PerfConfig, work: Path) -> dict[str, Any]:
    """Router and learner RSS by count, one child at a time, beside a bare interpreter."""
    result: dict[str, Any] = {"budget_s": config.memory_budget_s}
    result["bare"] = {}
    for kind in ("router", "learner"):
        result["bare"][kind] = memory_run(f"bare-{kind}", (0,), config.memory_budget_s, work)[0]
        rows = memory_run(kind, config.memory_points, config.memory_budget_s, work)
        result[kind] = {"points": rows, "extrapolated_rss_kb_at_1m": _extrapolate(rows)}
    return result


def _extrapolate(rows: list[dict]) -> float | None:
    """RSS at 1,000,000 on the line through the last two points (None with fewer than two)."""
    if len(rows) < 2 or rows[-1]["at"] == rows[-2]["at"]:
        return None
    a, b = rows[-2], rows[-1]
    slope = (b["rss_kb"] - a["rss_kb"]) / (b["at"] - a["at"])
    return b["rss_kb"] + slope * (1_000_000 - b["at"])


# -- the report -------------------------------------------------------------------------------


def run_benchmark(config: PerfConfig, work: Path) -> dict[str, Any]:
    """Every part in turn, one measured thing at a time on the machine."""
    return {
        "http": http_part(config, work),
        "learner": learner_part(config, work),
        "policy_delay": policy_delay_part(config, work),
        "memory": memory_part(config, work),
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value, whether it is met, and the miss factor."""
    http, learner = results["http"], results["learner"]["learner"]
    rows = [
        ("decision p99 at 200/s (ms)", http["router"]["light"]["p99_ms"], P99_TARGET_MS, "<="),
        ("peak throughput / baseline", http["throughput_ratio"], THROUGHPUT_TARGET_RATIO, ">="),
        (
            "learner events/s (steady)",
            learner["events_per_s_steady"],
            LEARNER_TARGET_EVENTS_S,
            ">=",
        ),
        (
            "outcome-to-policy median (s)",
            results["policy_delay"]["median_s"],
            POLICY_DELAY_TARGET_S,
            "<=",
        ),
        (
            "outcome-to-policy max (s)",
            results["policy_delay"]["max_s"],
            POLICY_DELAY_TARGET_S,
            "<=",
        ),
    ]
    for kind in ("router", "learner"):
        growth = memory_growth_mb(results["memory"][kind]["points"])
        if growth is not None:
            rows.append((f"{kind} RSS growth from 100k (MB)", growth, MEMORY_GROWTH_TARGET_MB, "<"))
    out = []
    for name, value, target, op in rows:
        met = value < target if op == "<" else value >= target if op == ">=" else value <= target
        factor = value / target if op != ">=" else (target / value if value else float("inf"))
        out.append(
            {
                "target": name,
                "op": op,
                "goal": target,
                "measured": value,
                "met": met,
                "miss_factor": None if met else factor,
            }
        )
    return out


def memory_growth_mb(points: list[dict]) -> float | None:
    """RSS growth from the 100,000 point to the last one reached (None before two such points)."""
    start = next((p for p in points if p["at"] == 100_000), None)
    if start is None or points[-1]["at"] <= start["at"]:
        return None
    return float(points[-1]["rss_kb"] - start["rss_kb"]) / 1024


def _mb(kb: float | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.1f}"


def _cpu_latency_line(max_us: int | None) -> str:
    if max_us is None:
        return "- CPU idle states: the machine's own (no PM QoS request held)"
    return (
        f"- CPU idle states: the run held `/dev/cpu_dma_latency` at {max_us} us throughout "
        "(`--cpu-latency-us`; what `BUDGET_ROUTER_CPU_LATENCY_US` asks for), for every server"
    )


def _realtime_line(priority: int | None) -> str:
    if priority is None:
        return "- Scheduling: the normal policy for every process"
    return (
        f"- Scheduling: every router ran under SCHED_FIFO at priority {priority} "
        f"(`--realtime-priority`; what `{REALTIME_SETTING}` asks for), the baseline too; the "
        "load generator, learner, broker and PostgreSQL under the normal policy"
    )


def _check_realtime(parser: argparse.ArgumentParser, priority: int) -> None:
    """Stop before measuring when the priority cannot be had (range, or no CAP_SYS_NICE)."""
    if not 1 <= priority <= 99:
        parser.error(f"--realtime-priority: {priority} is outside 1-99")
    probe = subprocess.run(["chrt", "--fifo", str(priority), "true"], capture_output=True)
    if probe.returncode != 0:
        parser.error(f"--realtime-priority: {probe.stderr.decode(errors='replace').strip()}")


def render(document: dict[str, Any]) -> str:
    """The results page: machine, commands, seeds, every number, the targets' verdict."""
    meta, res = document["meta"], document["results"]
    m = meta["machine"]
    http, lrn, delay, mem = res["http"], res["learner"], res["policy_delay"], res["memory"]
    lines = [
        "# Service performance: decisions, learner, policy updates, memory",
        "",
        "**Quick mode: a smoke run of the harness; these numbers are not a measurement.**"
        if meta["quick"]
        else "",
        f"- Command: `{meta['command']}`",
        f"- Code: {meta['code']}",
        f"- Date: {meta['date']}; wall time {meta['wall_s']} s",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['python']} on {m['os']}; {m['stack']}",
        f"- Load average (1 min) at start: {m['load']}, at end: {meta['load_at_end']}; other "
        "processes were not stopped, and load generator and servers share the cores.",
        f"- Seed: {meta['seed']} (workloads, event streams, the router's sampling)",
        _cpu_latency_line(meta.get("cpu_latency_us")),
        _realtime_line(meta.get("realtime_priority")),
        "",
        "## Targets",
        "",
        "| target | goal | measured | met | missed by |",
        "|---|---|---:|---|---|",
    ]
    for t in document["targets"]:
        miss = "" if t["met"] else f"{t['miss_factor']:.2f}x"
        lines.append(
            f"| {t['target']} | {t['op']} {t['goal']:g} | {t['measured']:.4f} | "
            f"{'yes' if t['met'] else 'no'} | {miss} |"
        )
    lines += ["", "## 1. Decision latency and throughput over HTTP, full stack on", ""]
    lines += [
        f"The router runs as `{http['stack']}` (embedded broker, learner and router; ledger, "
        "SQLite spool and event publishing on; the learner publishes and the router hot-swaps "
        "at the default intervals, as in section 3); the load is `bench/decision_latency.py`'s "
        "phases "
        f"(warm-up, open loop at {meta['latency']['light_rate']:g}/s for "
        f"{meta['latency']['light_s']:g} s on {meta['latency']['light_connections']} "
        f"connections, closed loop on {meta['latency']['peak_connections']} connections for "
        f"{meta['latency']['peak_s']:g} s; {http['tasks_opened']} tasks opened, "
        f"{meta['latency']['decisions_per_task']} decisions each). The baseline is "
        "`bench/baseline_app.py` under the same uvicorn, measured right after. The learner had "
        f"consumed {http['learner_consumed_after']} events when the router was stopped.",
        "",
        "| server | load | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run_ in (("budget-router (up)", http["router"]), ("baseline", http["baseline"])):
        for r in (run_["light"], run_["peak"]):
            lines.append(
                f"| {name} | {r['label']} | {r['count']} | {r['errors']} | "
                f"{r['requests_per_s']:.1f} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | "
                f"{r['p99_ms']:.3f} | {r['max_ms']:.3f} |"
            )
    skipped = []
    for key, name in (
        ("router_alone", "budget-router serve + broker, no learner"),
        ("router_postgres", "budget-router (up), PostgreSQL ledger"),
        ("router_postgres_replicas", "2 routers (up + serve), one PostgreSQL ledger"),
    ):
        shared = http.get(key)
        if shared and "skipped" not in shared:
            for r in (shared["light"], shared["peak"]):
                lines.append(
                    f"| {name} | {r['label']} | {r['count']} | "
                    f"{r['errors']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.3f} | "
                    f"{r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_ms']:.3f} |"
                )
        elif shared:
            skipped.append(f"{name} skipped: {shared['skipped']}")
    if skipped:
        lines += ["", *skipped]
    lines += ["", f"Peak ratio router / baseline: {http['throughput_ratio']:.4f}", ""]
    ln = lrn["learner"]
    lines += [
        "## 2. Learner throughput",
        "",
        f"{lrn['events']} seeded events ({lrn['decisions']} decision + outcome pairs, "
        f"{STEPS_PER_TASK} steps per task, each task closed; features built by "
        "`router_service.features` over the default catalog, epsilon-greedy pmf over its 14 "
        "models) were produced to the events topic of an embedded broker "
        f"({lrn['produce_events_per_s']:.0f} events/s), then `budget-router learn` (join, "
        "reward, VW update, DuckDB store, checkpoints, snapshots and rolling features) started "
        "on it, timed on its status file until `consumed` reached the count.",
        "",
        "| what | events/s | detail |",
        "|---|---:|---|",
        f"| learner, steady (first status to last) | {ln['events_per_s_steady']:.0f} | "
        f"first status at {ln['first_status_s']:.2f} s with {ln['first_status_consumed']} "
        "consumed |",
        f"| learner, from process start | {ln['events_per_s_from_start']:.0f} | "
        f"{ln['wall_s_from_start']:.2f} s including start-up and group join; "
        f"{ln['learned_steps']} steps learned, {ln['dead_lettered']} dead-lettered, "
        f"snapshot {ln['snapshot']}, RSS {_mb(ln['rss_kb_at_end'])} MB |",
        f"| VW alone ({lrn['vw_alone']['learn_calls']} `VWPolicyModel.learn` calls) | "
        f"{lrn['vw_alone']['events_per_s']:.0f} | {lrn['vw_alone']['seconds']:.2f} s, "
        f"{lrn['vw_alone']['learn_calls'] / lrn['vw_alone']['seconds']:.0f} learns/s |",
        f"| VW alone, one `learn_many` (as the learner per poll) | "
        f"{lrn['vw_learn_many']['events_per_s']:.0f} | {lrn['vw_learn_many']['seconds']:.2f} s |",
        f"| bare kafka-python consumer | {lrn['bare_consumer']['events_per_s']:.0f} | "
        f"{lrn['bare_consumer']['seconds']:.2f} s, no group, no decode |",
        "",
        "## 3. Outcome-to-policy delay",
        "",
        f"On a fresh `budget-router up` with the default publication and hot-swap intervals "
        f"({', '.join(f'{k}={v}' for k, v in delay['env'].items())}): decide one step, post its "
        "outcome, close its task, then poll `/readyz` every 20 ms until `policy_version` "
        f"changes. {delay['repeats']} repeats: median {delay['median_s']:.2f} s, max "
        f"{delay['max_s']:.2f} s (all: {', '.join(f'{d:.2f}' for d in delay['delays_s'])}).",
        "",
        "## 4. Memory",
        "",
        "RSS from `/proc/<pid>/status` (VmRSS) of child processes, read while each one waits at "
        "a count. The router child builds `RouterState` and awaits the endpoints' own functions "
        f"(open task, `/v1/decide`, `/v1/outcomes`, close), {AGENTS} tasks of {AGENT_STEPS} "
        "steps at a time, no HTTP; events go to its SQLite spool (no broker). The learner child "
        "feeds the deployed learner (join, VW, DuckDB, snapshots) seeded events in batches of "
        f"2,000, no broker. Each child stops at the last count it can reach within "
        f"{mem['budget_s']:g} s. Baselines: a bare interpreter with the same imports as the "
        f"router child, {_mb(mem['bare']['router']['rss_kb'])} MB, and as the learner child, "
        f"{_mb(mem['bare']['learner']['rss_kb'])} MB.",
        "",
        "| process | count | elapsed s | RSS MB |",
        "|---|---:|---:|---:|",
    ]
    for kind, unit in (("router", "decisions"), ("learner", "events")):
        for row in mem[kind]["points"]:
            lines.append(
                f"| {kind} | {row['at']:,} {unit} | {row['elapsed_s']:.1f} | {_mb(row['rss_kb'])} |"
            )
    lines.append("")
    for kind in ("router", "learner"):
        last = mem[kind]["points"][-1]["at"]
        if last < 1_000_000:
            lines.append(
                f"- {kind}: reached {last:,} within the time budget; on the line through its "
                f"last two points, 1,000,000 would be about "
                f"{_mb(mem[kind]['extrapolated_rss_kb_at_1m'])} MB (an extrapolation, not a "
                "measurement)."
            )
    return "\n".join(lines) + "\n"


def learner_memory_part(config: PerfConfig, work: Path) -> dict[str, Any]:
    """Learner RSS by count beside a bare interpreter with the same imports."""
    bare = memory_run("bare-learner", (0,), config.memory_budget_s, work)[0]
    rows = memory_run("learner", config.memory_points, config.memory_budget_s, work)
    return {"budget_s": config.memory_budget_s, "bare": bare, "points": rows}


def learner_only(
    config: PerfConfig, meta: dict[str, Any], out: Path, started: float
) -> dict[str, Any]:
    """Sections 2 and 4 for the learner alone, into ``service_perf_learner.json``."""
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        results = {
            "learner": learner_part(config, Path(tmp)),
            "learner_memory": learner_memory_part(config, Path(tmp)),
        }
    meta["wall_s"] = round(time.monotonic() - started, 1)
    meta["load_at_end"] = f"{os.getloadavg()[0]:.2f}"
    document = {"meta": meta, "results": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "service_perf_learner.json").write_text(json.dumps(document, indent=1))
    print(json.dumps(document, indent=1))
    return document


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every part, write ``service_perf.md`` and ``.json`` into ``--out``."""
    args_list = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.service_perf", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--quick", action="store_true", help="small sizes; a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-budget-s", type=float, help="time budget of each memory child")
    parser.add_argument(
        "--child",
        choices=("router", "learner", "bare-router", "bare-learner"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--cpu-latency-us",
        type=int,
        help="hold the Linux PM QoS CPU latency request at this bound for the whole run (needs "
        "write access to /dev/cpu_dma_latency); routers and baseline alike run under it",
    )
    parser.add_argument(
        "--realtime-priority",
        type=int,
        help="run every router (BUDGET_ROUTER_REALTIME_PRIORITY) and the baseline under "
        "SCHED_FIFO at this priority (1-99; needs CAP_SYS_NICE); the load generator and the "
        "learner keep the normal policy",
    )
    parser.add_argument("--points", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--only",
        choices=("learner",),
        help="run only these parts (learner: throughput and memory) and write "
        "service_perf_<part>.json beside the full results",
    )
    args = parser.parse_args(args_list)
    if args.child is not None:
        points = [int(p) for p in args.points.split(",")] if args.points else [0]
        if args.child.startswith("bare-"):
            _bare_child(args.child.removeprefix("bare-"))
        else:
            child = _router_child if args.child == "router" else _learner_child
            child(args.data_dir, points, args.seed)
        return {}
    config = PerfConfig.quick_run() if args.quick else PerfConfig()
    config = replace(config, seed=args.seed)
    if args.memory_budget_s is not None:
        config = replace(config, memory_budget_s=args.memory_budget_s)
    if args.realtime_priority is not None:
        _check_realtime(parser, args.realtime_priority)
        config = replace(config, realtime_priority=args.realtime_priority)
    meta: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.service_perf", *args_list]),
        "code": code_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine_facts(),
        "seed": config.seed,
        "quick": config.quick,
        "latency": asdict(config.latency),
        "learner_events": config.learner_events,
        "memory_points": list(config.memory_points),
        "cpu_latency_us": args.cpu_latency_us,
        "realtime_priority": args.realtime_priority,
    }
    started = time.monotonic()
    with contextlib.ExitStack() as held:
        if args.cpu_latency_us is not None:
            try:
                held.enter_context(hold_cpu_latency(args.cpu_latency_us))
            except ConfigError as exc:
                parser.error(f"--cpu-latency-us: {exc.__cause__ or exc}")
        if args.only == "learner":
            return learner_only(config, meta, args.out, started)
        if config.realtime_priority is not None:
            held.enter_context(environment({REALTIME_SETTING: str(config.realtime_priority)}))
        with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
            results = run_benchmark(config, Path(tmp))
    meta["wall_s"] = round(time.monotonic() - started, 1)
    meta["load_at_end"] = f"{os.getloadavg()[0]:.2f}"
    document = {"meta": meta, "results": results, "targets": targets(results)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "service_perf.json").write_text(json.dumps(document, indent=1))
    markdown = render(document)
    (args.out / "service_perf.md").write_text(markdown)
    print(markdown)
    return document


if __name__ == "__main__":
    main()
