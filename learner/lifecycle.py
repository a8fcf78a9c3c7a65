"""The router model's lifecycle for operators: replay, warm start, gate, promote, roll back.

Everything the ``budget-router replay/train/gate/promote/rollback/models`` commands do lives here
as plain functions over the feature store, the benchmark data and the MLflow registry, so tests
and notebooks call them without a command line.

Lambda: every reward here is ``quality - lam * cost_dollars`` (the replay's definition), so
``lam`` is quality per dollar. The online learner's unit-free lambda over a task budget ``B`` is
``lam * B`` here.

Benchmark steps (RouterBench) are featurised as the router featurises the request an agent would
send for that prompt (see :func:`benchmark_step`): one ``execution`` step whose type is the eval
name, ``1.3 x words`` input tokens, 200 expected output tokens, trust domain ``bench``, task type
``routerbench`` and context ``{"eval": <eval name>}``; the catalog prices each model with one
blended per-token price fitted on the train split's real costs. A model trained on these
features serves a router whose catalog is :func:`benchmark_catalog`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow.parquet as pq
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from feature_store.logged import LoggedStep
from feature_store.schema import to_utc_naive
from feature_store.store import DuckDBFeatureStore
from learner.allocator import BudgetAllocator
from learner.benchmark_data import (
    ROUTERBENCH_TIERS,
    TOKENS_PER_WORD,
    BenchmarkTable,
    SimulatedLog,
    load_routerbench,
    simulate_logged,
)
from learner.gate_evidence import gather_evidence
from learner.model_bundle import ModelBundle
from learner.ope import EvaluationError
from learner.promotion import GateConfig, GateDecision, evaluate_gate, maybe_promote
from learner.registry import CHAMPION, AliasMove, ModelRegistry, Pin, RegistryError
from learner.replay import (
    CandidatePolicy,
    EpsilonGreedyCandidate,
    FixedModelCandidate,
    ReplayReport,
    StepKindRuleCandidate,
    VWFileCandidate,
    replay,
)
from learner.settings import LearnerSettings
from learner.vw_model import Namespaces, VWPolicyModel
from router_service.catalog import Catalog, ModelSpec
from router_service.features import action_features, shared_features
from router_service.policy import build_policy, exploration_spec
from router_service.schemas import Signals, Step
from router_service.settings import Settings

Progress = Callable[[int, int], None]
BENCHMARK_FILE = Path(__file__).resolve().parents[1] / "bench" / "data" / "routerbench.parquet"
BENCHMARK_TRUST_DOMAIN = "bench"
BENCHMARK_OUTPUT_TOKENS = 200


class LifecycleError(Exception):
    """An operator request that cannot be carried out as asked (bad spec, no data, no version)."""

    retriable: ClassVar[bool] = False


def registry_for(settings: Settings) -> ModelRegistry:
    """The configured MLflow registry, or the embedded ``sqlite:///<data_dir>/mlflow.db``."""
    if settings.tracking_uri is None:
        return ModelRegistry.embedded(settings.data_dir)
    return ModelRegistry(settings.tracking_uri)


# --- candidates ------------------------------------------------------------------------------


class VWModelCandidate:
    """A loaded VW model (e.g. a registered bundle's) scored on the logged features."""

    def __init__(self, model: VWPolicyModel, name: str) -> None:
        self.model = model
        self.name = name

    def pmf(self, step: LoggedStep) -> list[float]:
        return self.model.predict(step.shared_features, step.action_features)


class CostRankCandidate:
    """The dearest (``strongest``) or cheapest action by each step's estimated cost."""

    def __init__(self, strongest: bool) -> None:
        self.strongest = strongest
        self.name = "strongest (dearest estimate)" if strongest else "cheapest (estimate)"

    def pmf(self, step: LoggedStep) -> list[float]:
        priced = [(c, i) for i, c in enumerate(step.estimated_costs) if c is not None]
        if not priced:
            raise EvaluationError(f"decision {step.decision_id!r} has no priced action")
        pick = (max if self.strongest else min)(priced, key=lambda item: (item[0], -item[1]))[1]
        return [1.0 if i == pick else 0.0 for i in range(len(step.actions))]


def parse_candidate(spec: str, registry: Callable[[], ModelRegistry]) -> CandidatePolicy:
    """A candidate from ``vw:PATH``, ``mlflow:VERSION|ALIAS``, ``model:ID``, ``rule:K=ID,...``,
    ``epsilon:BASE:EPS``, ``strongest`` or ``cheapest``; ``registry`` is called only if needed."""
    kind, _, rest = spec.partition(":")
    if spec in ("strongest", "cheapest"):
        return CostRankCandidate(strongest=spec == "strongest")
    if kind == "vw" and rest:
        return VWFileCandidate(Path(rest))
    if kind == "mlflow" and rest:
        bundle = registry().load_bundle(rest)
        return VWModelCandidate(bundle.policy_model(), f"mlflow:{rest}@{bundle.digest}")
    if kind == "model" and rest:
        return FixedModelCandidate(rest)
    if kind == "rule" and rest:
        pairs = [part.partition("=") for part in rest.split(",") if part]
        if not pairs or any(not k or not v for k, _, v in pairs):
            raise LifecycleError(f"rule spec {spec!r}: expected rule:KIND=MODEL,KIND=MODEL,...")
        mapping = {k.strip(): v.strip() for k, _, v in pairs}
        default = mapping.pop("default", None)
        return StepKindRuleCandidate(mapping, default)
    if kind == "epsilon" and rest:
        base, _, eps = rest.rpartition(":")
        try:
            epsilon = float(eps)
        except ValueError:
            epsilon = math.nan
        if not base or not 0 <= epsilon <= 1:
            raise LifecycleError(
                f"epsilon spec {spec!r}: expected epsilon:BASE_SPEC:EPS, 0<=EPS<=1"
            )
        return EpsilonGreedyCandidate(parse_candidate(base, registry), epsilon)
    raise LifecycleError(
        f"candidate {spec!r}: expected vw:PATH, mlflow:VERSION, mlflow:champion, "
        "mlflow:challenger, model:ID, rule:control=ID,..., epsilon:SPEC:EPS, strongest or cheapest"
    )


# --- logged data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedData:
    """Logged steps, the dollar cap of the tasks whose cap is known, and where they came from."""

    steps: list[LoggedStep]
    task_caps: dict[str, float]
    window: tuple[str, str]
    source: str

    def steps_per_task(self) -> float:
        return len(self.steps) / max(1, len({s.task_id for s in self.steps}))

    def mean_cap(self, fallback: float) -> float:
        """Mean cap over the logged tasks with a known cap, else ``fallback``."""
        caps = [self.task_caps[t] for t in {s.task_id for s in self.steps} if t in self.task_caps]
        return float(np.mean(caps)) if caps else fallback


def load_logged(
    data_dir: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    domain: str | None = None,
    logged_path: Path | None = None,
    missing_ok: bool = False,
) -> LoggedData:
    """Decisions joined with outcomes from a Parquet export, else ``<data_dir>/features.duckdb``.

    The store is opened read-only; DuckDB lets one process write the file, so while the learner
    runs, pass a Parquet export (``DuckDBFeatureStore.export_logged_steps``) instead. With
    ``missing_ok`` a data dir without a store gives no steps instead of an error.
    """
    if logged_path is not None:
        return _from_parquet(logged_path, since, until, domain)
    path = data_dir / "features.duckdb"
    if missing_ok and not path.is_file():
        return LoggedData([], {}, ("", ""), f"{path} (not created yet)")
    if not path.is_file():
        raise LifecycleError(
            f"no feature store at {path}; run the learner first or pass --logged FILE.parquet"
        )
    try:
        with DuckDBFeatureStore(path, read_only=True) as store:
            return logged_from_store(store, str(path), since=since, until=until, domain=domain)
    except Exception as exc:  # duckdb's lock errors vary by version; all mean "not readable"
        raise LifecycleError(
            f"cannot read the feature store {path} ({exc}); if the learner holds it, stop the "
            "learner or pass --logged with a Parquet export of the logged steps"
        ) from exc


def logged_from_store(
    store: DuckDBFeatureStore,
    source: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    domain: str | None = None,
    limit: int | None = None,
) -> LoggedData:
    """Decisions joined with outcomes from an open store (the learner's own connection); with
    ``limit``, the first ``limit`` of them."""
    steps = store.logged_steps(since, until, domain, limit=limit)
    mine = store.spend_of_logged_tasks(since, until, domain, limit=limit)
    caps = {t["task_id"]: float(t["total_dollars"]) for t in mine if t["total_dollars"]}
    window = (
        (min(t["first_at"] for t in mine).isoformat(), max(t["last_at"] for t in mine).isoformat())
        if mine
        else ("", "")
    )
    return LoggedData(steps, caps, window, source)


def _from_parquet(
    path: Path, since: datetime | None, until: datetime | None, domain: str | None
) -> LoggedData:
    if not path.is_file():
        raise LifecycleError(f"logged steps file {path} does not exist")
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:
        raise LifecycleError(f"cannot read logged steps from {path}: {exc}") from exc
    low = None if since is None else to_utc_naive(since)
    high = None if until is None else to_utc_naive(until)
    rows = [
        r
        for r in rows
        if (low is None or r["decided_at"] >= low)
        and (high is None or r["decided_at"] < high)
        and (domain is None or r["trust_domain"] == domain)
    ]
    steps = [
        LoggedStep(
            **{
                **{k: r[k] for k in _LOGGED_FIELDS},
                "shared_features": json.loads(r["shared_features"]),
                "action_features": json.loads(r["action_features"]),
            }
        )
        for r in rows
    ]
    times = [r["decided_at"].replace(tzinfo=UTC).isoformat() for r in rows]
    window = (min(times), max(times)) if times else ("", "")
    return LoggedData(steps, {}, window, str(path))


_FEATURE_FIELDS = ("shared_features", "action_features")
_LOGGED_FIELDS = [f.name for f in fields(LoggedStep) if f.name not in _FEATURE_FIELDS]


# --- benchmark --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkPrompt:
    """What the router would learn of one benchmark prompt: its eval and its length."""

    eval_name: str
    prompt_words: float
    dataset: str = "routerbench"


def benchmark_prompts(table: BenchmarkTable, dataset: str = "routerbench") -> list[BenchmarkPrompt]:
    return [
        BenchmarkPrompt(e, float(w), dataset)
        for e, w in zip(table.eval_names, table.prompt_words, strict=True)
    ]


def benchmark_step(row: BenchmarkPrompt) -> Step:
    """The step an agent sends for a benchmark prompt (see the module docstring)."""
    return Step(
        kind="execution",
        type=row.eval_name,
        input_tokens=max(1, int(np.round(TOKENS_PER_WORD * row.prompt_words))),
        expected_output_tokens=BENCHMARK_OUTPUT_TOKENS,
    )


def benchmark_step_features(
    row: BenchmarkPrompt, catalog_models: Sequence[ModelSpec]
) -> tuple[Namespaces, list[Namespaces]]:
    """Shared and per-model features exactly as the router builds them for this prompt."""
    step = benchmark_step(row)
    shared = shared_features(
        step,
        Signals(),
        trust_domain=BENCHMARK_TRUST_DOMAIN,
        task_type=row.dataset,
        tags={},
        context={"eval": row.eval_name},
    )
    actions = [
        action_features(m, m.token_cost(step.input_tokens, step.expected_output_tokens))
        for m in catalog_models
    ]
    return shared, actions


def benchmark_catalog(train: BenchmarkTable) -> list[ModelSpec]:
    """One model spec per benchmark model (table order), priced by a fit on ``train``."""
    tokens = float(np.sum(np.round(TOKENS_PER_WORD * train.prompt_words) + BENCHMARK_OUTPUT_TOKENS))
    specs = []
    for j, model in enumerate(train.models):
        if model not in ROUTERBENCH_TIERS:
            raise LifecycleError(f"no tier for benchmark model {model!r}")
        price = round(float(train.cost[:, j].sum()) / tokens * 1e6, 6)
        provider = model.split("/")[0] if "/" in model else "benchmark"
        specs.append(
            ModelSpec.model_validate(
                {
                    "id": model,
                    "provider": provider,
                    "tier": ROUTERBENCH_TIERS[model],
                    "input_price_per_mtok": price,
                    "output_price_per_mtok": price,
                    "context_window": 200_000,
                }
            )
        )
    return specs


@dataclass(frozen=True)
class Benchmark:
    """A benchmark split with the catalog (fitted on the train split) that prices it."""

    table: BenchmarkTable
    catalog: list[ModelSpec]
    path: Path
    split: str


def load_benchmark(name: str, split: str, path: Path | None = None) -> Benchmark:
    """RouterBench's ``split`` and its catalog; ``path`` defaults to bench/data's compact copy."""
    if name != "routerbench":
        raise LifecycleError(f"benchmark {name!r}: expected routerbench")
    path = path or BENCHMARK_FILE
    if not path.is_file():
        raise LifecycleError(
            f"routerbench data not found at {path}; pass --benchmark-file with a RouterBench "
            "Parquet file (raw or compact)"
        )
    table = load_routerbench(path, split)
    try:
        train = table if split == "train" else load_routerbench(path, "train")
    except EvaluationError:
        train = table  # a file with one split prices itself
    if train.models != table.models:
        raise LifecycleError(f"{path}: the train and {split} splits have different models")
    return Benchmark(table, benchmark_catalog(train), path, split)


def benchmark_log(benchmark: Benchmark, n_steps: int, seed: int) -> SimulatedLog:
    """A uniform logging policy over ``benchmark``'s prompts, with the router's features."""
    table = benchmark.table
    log = simulate_logged(
        table, n_steps=n_steps, seed=seed, trust_domains=(BENCHMARK_TRUST_DOMAIN,)
    )
    rows = {p: i for i, p in enumerate(table.prompt_ids)}
    prompts = benchmark_prompts(table)
    steps = []
    for step in log.steps:
        row = prompts[rows[step.task_id.rsplit("#", 1)[0]]]
        shared, actions = benchmark_step_features(row, benchmark.catalog)
        request = benchmark_step(row)
        costs = [
            m.token_cost(request.input_tokens, request.expected_output_tokens)
            for m in benchmark.catalog
        ]
        steps.append(
            replace(step, shared_features=shared, action_features=actions, estimated_costs=costs)
        )
    return SimulatedLog(steps, log.full_info)


# --- replay, training, registration -----------------------------------------------------------


def replay_candidate(
    steps: Sequence[LoggedStep],
    candidate: CandidatePolicy,
    lam: float,
    *,
    full_info: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    progress: Progress | None = None,
) -> ReplayReport:
    """:func:`learner.replay.replay` with a clear error when there is nothing to replay."""
    if not steps:
        raise LifecycleError("no logged decisions with outcomes match the filters")
    return replay(steps, candidate, lam, full_info=full_info, progress=progress)


def _order(n: int, passes: int, seed: int) -> list[int]:
    if passes < 1:
        raise LifecycleError(f"passes must be >= 1, got {passes}")
    rng, order = random.Random(seed), []
    for _ in range(passes):
        rows = list(range(n))
        rng.shuffle(rows)
        order += rows
    return order


def train_from_logged(
    settings: Settings, steps: Sequence[LoggedStep], lam: float, passes: int = 1
) -> VWPolicyModel:
    """The router's starting model (its prior or model file) plus IPS updates on ``steps``."""
    if not steps:
        raise LifecycleError("no logged decisions with outcomes to train on")
    models = list(Catalog.from_file(settings.catalog_path).snapshot().values())
    model = build_policy(settings, models).model
    for i in _order(len(steps), passes, settings.seed):
        s = steps[i]
        reward = s.quality - lam * s.cost_dollars
        model.learn(s.shared_features, s.action_features, s.chosen_index, -reward, s.propensity)
    return model


def train_from_benchmark(
    settings: Settings, benchmark: Benchmark, lam: float, passes: int = 1
) -> VWPolicyModel:
    """A fresh model (router exploration settings) taught every model's reward on every prompt.

    The router's prior is not used: it knows the router's catalog, not the benchmark's, and
    full information fixes every action's value anyway.
    """
    table = benchmark.table
    model = VWPolicyModel.create(exploration_spec(settings), settings.seed)
    prompts = benchmark_prompts(table)
    features = [benchmark_step_features(p, benchmark.catalog) for p in prompts]
    rewards = table.correct - lam * table.cost
    for i in _order(len(table), passes, settings.seed):
        shared, actions = features[i]
        for j in range(len(table.models)):
            model.learn(shared, actions, j, -float(rewards[i, j]), 1.0)
    return model


def register_model(
    registry: ModelRegistry,
    settings: Settings,
    model: VWPolicyModel,
    *,
    metrics: Mapping[str, float],
    params: Mapping[str, object],
    data_window: tuple[str, str],
) -> str:
    """Register ``model`` as a bundle (fresh allocator state); it becomes the challenger."""
    learner = LearnerSettings(data_dir=settings.data_dir)
    allocator = BudgetAllocator(
        learner.lambda_initial, learner.lambda_step, learner.spend_target_ratio
    )
    bundle = ModelBundle.from_model(
        model,
        exploration_spec(settings),
        allocator_state=allocator.to_state(),
        metadata={k: str(v) for k, v in params.items()},
    )
    finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    start, end = data_window
    return registry.register(
        bundle, finite, params, (start or "unknown", end or "unknown"), "budget-router train"
    )


def report_metrics(report: ReplayReport, prefix: str) -> dict[str, float]:
    """Overall SNIPS and DR (and exact, when known) of each outcome, and the ESS."""
    found = {f"{prefix}_ess": report.overall.ess, f"{prefix}_n": float(report.overall.n)}
    for outcome, r in report.overall.outcomes.items():
        found[f"{prefix}_snips_{outcome}"] = r.snips.value
        found[f"{prefix}_dr_{outcome}"] = r.dr.value
        if r.exact is not None:
            found[f"{prefix}_exact_{outcome}"] = r.exact
    return found


# --- gate, promotion, rollback, history -------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A version's replay beside the champion's on the same logged data, and the gate's verdict."""

    version: str
    champion_version: str | None
    candidate: ReplayReport | None
    champion: ReplayReport | None
    decision: GateDecision


def resolve_version(registry: ModelRegistry, version_or_alias: str) -> str:
    """A version number as given, or the version an alias points at."""
    if version_or_alias.isdigit():
        return version_or_alias
    version = registry.get_alias_version(version_or_alias)
    if version is None:
        raise LifecycleError(f"alias {version_or_alias!r} is not set in the registry")
    return version


def compare_with_champion(
    registry: ModelRegistry,
    version: str,
    data: LoggedData,
    lam: float,
    config: GateConfig,
    *,
    task_cap: float = 1.0,
    progress: Progress | None = None,
) -> Comparison:
    """Replay ``version`` and the champion on ``data`` and apply the promotion gate."""
    return compare_versions(
        version,
        registry.get_alias_version(CHAMPION),
        data,
        lam,
        config,
        bundle=registry.load_bundle,
        task_cap=task_cap,
        progress=progress,
    )


def compare_versions(
    version: str,
    champion: str | None,
    data: LoggedData,
    lam: float,
    config: GateConfig,
    *,
    bundle: Callable[[str], ModelBundle],
    task_cap: float = 1.0,
    progress: Progress | None = None,
) -> Comparison:
    """:func:`compare_with_champion` with the champion's version already read and the bundles
    coming from ``bundle`` (a registry's ``load_bundle``, or a cache of it)."""
    if not data.steps:
        reasons = [
            f"FAIL samples: no logged decisions to evaluate version {version} on "
            f"(minimum {config.min_steps})"
        ]
        return Comparison(version, champion, None, None, GateDecision(False, reasons))
    models = [bundle(version).policy_model()]
    if champion is not None and champion != version:
        models.append(bundle(champion).policy_model())
    try:
        replays = gather_evidence(
            data.steps,
            VWModelCandidate(models[0], f"version {version}"),
            VWModelCandidate(models[1], f"champion {champion}") if len(models) > 1 else None,
            lam,
            steps_per_task=data.steps_per_task(),
            mean_cap=data.mean_cap(task_cap),
            alpha=config.alpha,
            progress=progress,
        )
    finally:
        for model in models:
            model.close()
    if replays.evidence is None:
        decision = GateDecision(False, [f"FAIL version {version} or the champion has no estimate"])
    else:
        decision = evaluate_gate(replays.evidence, config)
    return Comparison(version, champion, replays.candidate, replays.champion, decision)


def promote(
    registry: ModelRegistry,
    comparison: Comparison,
    *,
    actor: str,
    reason: str,
    force: bool = False,
) -> AliasMove:
    """Move ``champion`` to the compared version if the gate passed (or ``force``)."""
    version = comparison.version
    if comparison.champion_version == version:
        raise LifecycleError(f"version {version} is already the champion")
    if not comparison.decision.passed:
        if not force:
            raise LifecycleError(
                f"the gate refused version {version}; pass --force to promote anyway"
            )
        failed = [r for r in comparison.decision.reasons if r.startswith("FAIL")]
        reason = f"{reason} (forced past the gate: {'; '.join(failed)})"
    return registry.promote(version, actor, reason)


def gate(
    registry: ModelRegistry, comparison: Comparison, config: GateConfig, *, actor: str
) -> bool:
    """Record the gate's decision on the version and promote if ``config.enabled`` and it passed."""
    return maybe_promote(registry, comparison.version, comparison.decision, config, actor)


def rollback(registry: ModelRegistry, *, actor: str, reason: str) -> AliasMove:
    """Move ``champion`` back to the champion before the current one."""
    return registry.rollback(actor, reason)


def pin(registry: ModelRegistry, *, actor: str, reason: str) -> Pin:
    """Hold the champion where it is: the automatic gate stops moving it until :func:`unpin`."""
    return registry.set_pin(actor, reason)


def unpin(registry: ModelRegistry, *, actor: str, reason: str) -> AliasMove:
    """Let the automatic gate move the champion again."""
    return registry.clear_pin(actor, reason)


@dataclass(frozen=True)
class VersionInfo:
    """One registered version: aliases, when, from what source, and the gate's last verdict."""

    version: str
    aliases: list[str]
    created_at: datetime
    source: str
    gate: str


def list_versions(registry: ModelRegistry) -> list[VersionInfo]:
    """Every version of the registry's model, newest first."""
    registry.get_alias_version(CHAMPION)  # fails fast, translated, if MLflow is unreachable
    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.registry_uri)
    try:
        found = client.search_model_versions(f"name = '{registry.model_name}'")
        aliases = client.get_registered_model(registry.model_name).aliases if found else {}
    except MlflowException as exc:
        raise RegistryError(f"could not list versions of {registry.model_name!r}: {exc}") from exc
    versions = [
        VersionInfo(
            version=str(v.version),
            aliases=sorted(a for a, version in aliases.items() if str(version) == str(v.version)),
            created_at=datetime.fromtimestamp(v.creation_timestamp / 1000, UTC),
            source=v.tags.get("source", ""),
            gate=v.tags.get("gate.outcome", ""),
        )
        for v in found
    ]
    return sorted(versions, key=lambda v: int(v.version), reverse=True)


def history(registry: ModelRegistry) -> list[AliasMove]:
    """Every audited alias move, oldest first."""
    return registry.history()
