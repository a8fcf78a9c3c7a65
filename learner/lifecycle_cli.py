"""``budget-router replay/train/gate/promote/rollback/pin/unpin/models``: the lifecycle commands.

The work is done by :mod:`learner.lifecycle`, imported only when a command runs (it loads MLflow
and VW); this module parses arguments, prints reports and turns every expected error into one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from learner.promotion import GateConfig
from router_service.settings import Settings

if TYPE_CHECKING:
    from learner.lifecycle import Benchmark, Comparison, LoggedData
    from learner.ope import Estimate
    from learner.registry import AliasMove, ModelRegistry
    from learner.replay import ReplayReport

SettingsFromArgs = Callable[[argparse.Namespace], Settings]
Handler = Callable[[argparse.Namespace, Settings], None]
DEFAULT_LAMBDA = 10.0  # quality per dollar: a 5-cent step costs 0.5 of quality


def add_lifecycle_commands(
    commands: argparse._SubParsersAction, settings_from_args: SettingsFromArgs
) -> None:
    """Add the lifecycle subcommands to the ``budget-router`` parser's subparsers."""

    def command(
        name: str, handler: Handler, help_text: str, parent: argparse._SubParsersAction = commands
    ) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data-dir", type=Path, help="where the service writes (./var)")
        sub.set_defaults(handler=_guarded(name, handler, settings_from_args))
        return sub

    replay = command("replay", _replay, "evaluate a candidate policy on logged decisions")
    replay.add_argument(
        "--candidate",
        required=True,
        help="vw:PATH, mlflow:VERSION|champion|challenger, model:ID, rule:control=ID,..., "
        "epsilon:SPEC:EPS, strongest or cheapest",
    )
    _data_arguments(replay)
    replay.add_argument("--json", type=Path, help="also write the report as JSON here")
    replay.add_argument("--chart", type=Path, help="also draw a chart here (PNG, or SVG)")
    _benchmark_arguments(replay, default_split="test")
    replay.add_argument("--n", type=int, default=3000, help="simulated decisions (benchmark)")

    train = command("train", _train, "warm-start a VW model from logged or benchmark data")
    train.add_argument("--from", dest="source", choices=("logged", "routerbench"), required=True)
    train.add_argument("--passes", type=int, default=1, help="passes over the data (1)")
    train.add_argument("--out", type=Path, help="model file (<data-dir>/models/warm-<from>.vw)")
    train.add_argument("--register", action="store_true", help="register it as challenger")
    _data_arguments(train)
    train.add_argument("--split", default="train", help="benchmark split to train on (train)")
    train.add_argument("--benchmark-file", type=Path, help="RouterBench Parquet file")
    train.add_argument("--seed", type=int, default=0, help="seed of the held-out evaluation")

    for name, handler, text in (
        ("promote", _promote, "compare a version with the champion, then make it champion"),
        ("gate", _gate, "run the promotion gate on a version"),
    ):
        sub = command(name, handler, text)
        sub.add_argument("version", help="a version number, or an alias such as challenger")
        _data_arguments(sub)
        _gate_arguments(sub)
        _audit_arguments(sub, name)
        if name == "promote":
            sub.add_argument("--force", action="store_true", help="promote even if the gate fails")
        else:
            sub.add_argument("--auto-promote", action="store_true", help="promote if it passes")

    rollback = command("rollback", _rollback, "move champion back to the previous version")
    _audit_arguments(rollback, "rollback")
    for name, handler, text in (
        ("pin", _pin, "stop the automatic gate from moving the champion"),
        ("unpin", _unpin, "let the automatic gate move the champion again"),
    ):
        _audit_arguments(command(name, handler, text), name)
    command("models", _models, "registered versions, aliases and the alias audit trail")
    registry = commands.add_parser("registry", help="the model registry")
    registry_commands = registry.add_subparsers(dest="registry_command", required=True)
    command("history", _history, "who moved which alias, when and why", registry_commands)


def _data_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=DEFAULT_LAMBDA,
        help=f"reward = quality - lambda x dollars ({DEFAULT_LAMBDA:g})",
    )
    sub.add_argument("--since", type=_utc, help="first decision time, ISO 8601 (inclusive)")
    sub.add_argument("--until", type=_utc, help="last decision time, ISO 8601 (exclusive)")
    sub.add_argument("--domain", help="only this trust domain")
    sub.add_argument(
        "--logged",
        type=Path,
        help="a Parquet export of logged steps to read instead of <data-dir>/features.duckdb",
    )


def _benchmark_arguments(sub: argparse.ArgumentParser, default_split: str) -> None:
    sub.add_argument("--benchmark", choices=("routerbench",), help="replay on benchmark data")
    sub.add_argument("--split", default=default_split, help=f"benchmark split ({default_split})")
    sub.add_argument("--seed", type=int, default=0, help="seed of the simulated logging (0)")
    sub.add_argument("--benchmark-file", type=Path, help="RouterBench Parquet file")


def _gate_arguments(sub: argparse.ArgumentParser) -> None:
    d = GateConfig()
    sub.add_argument(
        "--margin",
        type=float,
        default=d.margin,
        help=f"reward gain's lower bound must reach this ({d.margin:g})",
    )
    sub.add_argument(
        "--min-steps", type=int, default=d.min_steps, help=f"logged steps needed ({d.min_steps})"
    )
    sub.add_argument("--confidence", type=float, default=d.confidence, help="of the intervals")
    sub.add_argument("--quality-tolerance", type=float, default=d.quality_tolerance)
    sub.add_argument("--min-ess", type=float, default=d.min_ess)
    sub.add_argument("--max-spend-ratio", type=float, default=d.max_spend_ratio)
    sub.add_argument(
        "--task-cap",
        type=float,
        default=1.0,
        help="dollar cap per task where the store has none (1.0)",
    )


def _audit_arguments(sub: argparse.ArgumentParser, name: str) -> None:
    sub.add_argument("--actor", default=_os_user(), help="who (the OS user)")
    sub.add_argument("--reason", default=f"budget-router {name}", help="why")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _utc(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _guarded(
    name: str, handler: Handler, settings_from_args: SettingsFromArgs
) -> Callable[[argparse.Namespace], None]:
    """Run ``handler``; expected errors become one line and exit status 1, never a traceback."""

    def run(args: argparse.Namespace) -> None:
        from feature_store.errors import FeatureStoreError
        from learner.lifecycle import LifecycleError
        from learner.model_bundle import BundleError
        from learner.ope import EvaluationError
        from learner.registry import RegistryError

        settings = settings_from_args(args)
        try:
            handler(args, settings)
        except (
            LifecycleError,
            EvaluationError,
            RegistryError,
            BundleError,
            FeatureStoreError,
            ValueError,
            OSError,
        ) as exc:
            raise SystemExit(f"budget-router {name}: {exc}") from exc

    return run


def _progress(done: int, total: int) -> None:
    if total >= 1000 and (done * 10 // total) != ((done - 1) * 10 // total):
        print(f"replay: scored {done}/{total} decisions", file=sys.stderr, flush=True)


def _registry(settings: Settings) -> Callable[[], ModelRegistry]:
    from learner.lifecycle import registry_for

    return cache(lambda: registry_for(settings))


def _logged(args: argparse.Namespace, settings: Settings, missing_ok: bool = False) -> LoggedData:
    from learner.lifecycle import load_logged

    return load_logged(
        settings.data_dir,
        since=args.since,
        until=args.until,
        domain=args.domain,
        logged_path=args.logged,
        missing_ok=missing_ok,
    )


def _replay(args: argparse.Namespace, settings: Settings) -> None:
    from learner import lifecycle

    candidate = lifecycle.parse_candidate(args.candidate, _registry(settings))
    if args.benchmark is not None:
        bench = lifecycle.load_benchmark(args.benchmark, args.split, args.benchmark_file)
        log = lifecycle.benchmark_log(bench, args.n, args.seed)
        print(
            f"Benchmark {args.benchmark} ({bench.split} split, {len(bench.table)} prompts, "
            f"{len(bench.table.models)} models): {args.n} decisions of a uniform logging policy "
            f"(seed {args.seed}); 'exact' is the true counterfactual value"
        )
        steps, full_info = log.steps, log.full_info
    else:
        data = _logged(args, settings)
        print(f"Logged decisions: {len(data.steps)} from {data.source} ({_window(data)})")
        steps, full_info = data.steps, None
    report = lifecycle.replay_candidate(
        steps, candidate, args.lam, full_info=full_info, progress=_progress
    )
    print(report.to_text(), end="")
    if args.json is not None:
        args.json.write_text(report.to_json())
        print(f"wrote {args.json}")
    if args.chart is not None:
        print(f"wrote {report.save_chart(args.chart)}")


def _train(args: argparse.Namespace, settings: Settings) -> None:
    from learner import lifecycle

    out = args.out or settings.data_dir / "models" / f"warm-{args.source}.vw"
    params: dict[str, object] = {"from": args.source, "lambda": args.lam, "passes": args.passes}
    if args.source == "logged":
        data = _logged(args, settings)
        model = lifecycle.train_from_logged(settings, data.steps, args.lam, args.passes)
        report = lifecycle.replay_candidate(
            data.steps, lifecycle.VWModelCandidate(model, "trained model"), args.lam
        )
        metrics, window = lifecycle.report_metrics(report, "logged"), data.window
        params.update(examples=len(data.steps), data=data.source)
        print(
            f"trained on {len(data.steps)} logged decisions from {data.source}, "
            f"{args.passes} pass(es); in-sample replay:"
        )
    else:
        bench = lifecycle.load_benchmark("routerbench", args.split, args.benchmark_file)
        model = lifecycle.train_from_benchmark(settings, bench, args.lam, args.passes)
        params.update(examples=len(bench.table), data=f"{bench.path.name}:{args.split}")
        window = (f"{bench.path.name}:{args.split}", f"{bench.path.name}:{args.split}")
        print(
            f"trained on {len(bench.table)} {args.split} prompts x {len(bench.table.models)} "
            f"models (full information), {args.passes} pass(es)"
        )
        held_out = bench if args.split == "test" else _test_split(args.benchmark_file, bench)
        log = lifecycle.benchmark_log(held_out, 2000, args.seed)
        report = lifecycle.replay_candidate(
            log.steps,
            lifecycle.VWModelCandidate(model, "trained model"),
            args.lam,
            full_info=log.full_info,
        )
        metrics = lifecycle.report_metrics(report, "test")
        print(f"{held_out.split} split, 2000 decisions of a uniform logging policy:")
    print(_summary(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    print(f"wrote {out}")
    if args.register:
        version = lifecycle.register_model(
            _registry(settings)(),
            settings,
            model,
            metrics=metrics,
            params=params,
            data_window=window,
        )
        print(f"registered version {version} (alias challenger)")


def _test_split(path: Path | None, fallback: Benchmark) -> Benchmark:
    """The held-out test split, or the training split itself if the file has no test split."""
    from learner import lifecycle
    from learner.ope import EvaluationError

    try:
        return lifecycle.load_benchmark("routerbench", "test", path)
    except EvaluationError:
        return fallback


def _summary(report: ReplayReport) -> str:
    lines = [f"  {'outcome':<8}{'logged':>10}{'snips':>10}{'dr':>10}{'exact':>10}"]
    for outcome, r in report.overall.outcomes.items():
        exact = "" if r.exact is None else f"{r.exact:10.4f}"
        lines.append(
            f"  {outcome:<8}{r.logged.value:10.4f}{r.snips.value:10.4f}{r.dr.value:10.4f}{exact}"
        )
    return "\n".join(lines)


def _config(args: argparse.Namespace, enabled: bool = True) -> GateConfig:
    return GateConfig(
        enabled,
        quality_tolerance=args.quality_tolerance,
        min_ess=args.min_ess,
        max_spend_ratio=args.max_spend_ratio,
        margin=args.margin,
        min_steps=args.min_steps,
        confidence=args.confidence,
    )


def _compare(args: argparse.Namespace, settings: Settings) -> tuple[ModelRegistry, Comparison]:
    from learner import lifecycle

    registry = _registry(settings)()
    version = lifecycle.resolve_version(registry, args.version)
    data = _logged(args, settings, missing_ok=True)
    comparison = lifecycle.compare_with_champion(
        registry, version, data, args.lam, _config(args), task_cap=args.task_cap, progress=_progress
    )
    print(_comparison_text(comparison, data))
    return registry, comparison


def _comparison_text(c: Comparison, data: LoggedData) -> str:
    champion = "none" if c.champion_version is None else c.champion_version
    lines = [f"Version {c.version} vs champion {champion}"]
    if c.candidate is None:
        lines.append(f"no logged decisions in {data.source}; off-policy comparison skipped")
    else:
        lines.append(
            f"Off-policy comparison on {c.candidate.overall.n} logged decisions from "
            f"{data.source} ({_window(data)}), lambda={c.candidate.lam:g}, SNIPS [95% CI]:"
        )
        slices = [("all", c.candidate.overall, c.champion and c.champion.overall)]
        for title, ours, theirs in (
            ("domain", c.candidate.by_domain, c.champion and c.champion.by_domain),
            ("kind", c.candidate.by_kind, c.champion and c.champion.by_kind),
        ):
            slices += [(f"{title} {k}", v, theirs and theirs[k]) for k, v in ours.items()]
        lines.append(
            f"  {'slice':<22}{'outcome':<9}{'version ' + c.version:<26}"
            f"{'champion ' + champion:<26}logged"
        )
        for name, ours, theirs in slices:
            for outcome in ("quality", "cost", "reward"):
                mine = ours.outcomes[outcome]
                other = "-" if not theirs else _est(theirs.outcomes[outcome].snips)
                lines.append(
                    f"  {name:<22}{outcome:<9}{_est(mine.snips):<26}{other:<26}"
                    f"{mine.logged.value:.4f}"
                )
        lines += [f"  warning: {w}" for w in c.candidate.warnings]
    lines.append("Gate: " + ("passed" if c.decision.passed else "FAILED"))
    lines += [f"  {reason}" for reason in c.decision.reasons]
    return "\n".join(lines)


def _est(e: Estimate) -> str:
    return f"{e.value:.4f} [{e.ci_low:.4f}, {e.ci_high:.4f}]"


def _window(data: LoggedData) -> str:
    start, end = data.window
    return f"{start} .. {end}" if start else "no time window"


def _promote(args: argparse.Namespace, settings: Settings) -> None:
    from learner import lifecycle

    registry, comparison = _compare(args, settings)
    move = lifecycle.promote(
        registry, comparison, actor=args.actor, reason=args.reason, force=args.force
    )
    print(_move_line(move))


def _gate(args: argparse.Namespace, settings: Settings) -> None:
    from learner import lifecycle

    registry, comparison = _compare(args, settings)
    if args.auto_promote:
        promoted = lifecycle.gate(registry, comparison, _config(args), actor=args.actor)
        print(f"version {comparison.version} {'promoted to' if promoted else 'not made'} champion")
    if not comparison.decision.passed:
        raise SystemExit(f"budget-router gate: version {comparison.version} failed the gate")


def _rollback(args: argparse.Namespace, settings: Settings) -> None:
    from learner import lifecycle

    move = lifecycle.rollback(_registry(settings)(), actor=args.actor, reason=args.reason)
    print(_move_line(move))


def _pin(args: argparse.Namespace, settings: Settings) -> None:
    from learner import lifecycle

    pin = lifecycle.pin(_registry(settings)(), actor=args.actor, reason=args.reason)
    print(f"champion pinned at version {pin.version} by {pin.actor}: {pin.reason}")


def _unpin(args: argparse.Namespace, settings: Settings) -> None:
    from learner import lifecycle

    move = lifecycle.unpin(_registry(settings)(), actor=args.actor, reason=args.reason)
    print(f"champion unpinned at version {move.to_version or 'none'} by {move.actor}")


def _move_line(move: AliasMove) -> str:
    return (
        f"{move.alias}: {move.from_version or 'none'} -> {move.to_version} "
        f"({move.action} by {move.actor}: {move.reason})"
    )


def _models(args: argparse.Namespace, settings: Settings) -> None:
    from learner import lifecycle

    registry = _registry(settings)()
    versions = lifecycle.list_versions(registry)
    print(f"Model {registry.model_name!r} in {registry.tracking_uri}")
    pin = registry.pin()
    if pin is not None:
        print(f"  champion pinned at version {pin.version} by {pin.actor}: {pin.reason}")
    print(f"  {'version':<9}{'aliases':<22}{'created (UTC)':<21}{'source':<22}gate")
    for v in versions:
        created = v.created_at.strftime("%Y-%m-%d %H:%M:%S")
        aliases = ",".join(v.aliases) or "-"
        print(f"  {v.version:<9}{aliases:<22}{created:<21}{v.source:<22}{v.gate or '-'}")
    if not versions:
        print("  no versions registered yet (budget-router train --register)")
    print()
    _history(args, settings)


def _history(args: argparse.Namespace, settings: Settings) -> None:
    from learner import lifecycle

    moves = lifecycle.history(_registry(settings)())
    print("Alias moves (oldest first):")
    for m in moves:
        at = m.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"  {at}  {m.alias:<11}{m.action:<9}{m.from_version or 'none':>5} -> "
            f"{m.to_version:<5} by {m.actor}: {m.reason}"
        )
    if not moves:
        print("  none")
