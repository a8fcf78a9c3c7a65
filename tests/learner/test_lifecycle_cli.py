"""The lifecycle commands end to end: a real DuckDB store, real VW models, a real MLflow store."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from learner.lifecycle_cli import add_lifecycle_commands
from learner.registry import CHALLENGER, CHAMPION, ModelRegistry
from router_service.embedded_broker import free_port
from router_service.settings import Settings
from tests.learner.test_lifecycle import split_benchmark, write_store

pytestmark = pytest.mark.integration


def parser(settings: Callable[[argparse.Namespace], Settings]) -> argparse.ArgumentParser:
    """The parser as router_service.cli.build_parser builds it, with the lifecycle commands."""
    built = argparse.ArgumentParser(prog="budget-router")
    commands = built.add_subparsers(dest="command", required=True)
    add_lifecycle_commands(commands, settings)
    return built


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(data_dir=args.data_dir)


def run(*argv: str | Path) -> str:
    """Run one command in-process and return what it printed on stdout."""
    args = parser(settings_from_args).parse_args([str(a) for a in argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        args.handler(args)
    return out.getvalue()


def fails(*argv: str | Path) -> str:
    """Run a command that must fail; return its one-line exit message."""
    with pytest.raises(SystemExit) as exc:
        run(*argv)
    message = str(exc.value.code)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture(scope="module")
def var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("var")
    write_store(folder)
    return folder


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return split_benchmark(tmp_path_factory.mktemp("bench") / "routerbench.parquet")


@pytest.fixture(scope="module")
def trained(var: Path, bench_file: Path) -> dict[str, str]:
    """Version 1 warm-started on RouterBench, version 2 on the logged store; their output."""
    bench = run(
        "train",
        "--from",
        "routerbench",
        "--benchmark-file",
        bench_file,
        "--out",
        var / "bench.vw",
        "--register",
        "--data-dir",
        var,
    )
    logged = run("train", "--from", "logged", "--passes", "2", "--register", "--data-dir", var)
    return {"routerbench": bench, "logged": logged}


def registry(var: Path) -> ModelRegistry:
    return ModelRegistry.embedded(var)


def test_train_registers_challengers(var: Path, trained: dict[str, str]) -> None:
    assert "trained on 627 train prompts x 11 models" in trained["routerbench"]
    assert "test split, 2000 decisions of a uniform logging policy" in trained["routerbench"]
    assert "registered version 1 (alias challenger)" in trained["routerbench"]
    assert "trained on 600 logged decisions" in trained["logged"]
    assert "registered version 2 (alias challenger)" in trained["logged"]
    assert (var / "models" / "warm-logged.vw").is_file()
    assert registry(var).get_alias_version(CHALLENGER) == "2"


def test_replay_on_the_store_reports_domains_and_kinds(var: Path, tmp_path: Path) -> None:
    out = run(
        "replay",
        "--candidate",
        "rule:control=large-model,execution=small-model",
        "--json",
        tmp_path / "r.json",
        "--chart",
        tmp_path / "r.png",
        "--data-dir",
        var,
    )
    assert out.startswith(f"Logged decisions: 600 from {var / 'features.duckdb'}")
    for heading in (
        "== Per trust domain ==",
        "-- domain eng",
        "-- domain legal",
        "== Per step kind ==",
        "-- kind control",
        "-- kind execution",
    ):
        assert heading in out
    assert "exact" not in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["by_domain"]) == {"eng", "legal"}
    assert report["overall"]["n"] == 600
    chart = next(tmp_path.glob("r.*g"))  # r.png, or r.svg without matplotlib
    assert chart.stat().st_size > 0


def test_replay_of_a_registered_version_with_filters(var: Path, trained: dict[str, str]) -> None:
    out = run(
        "replay",
        "--candidate",
        "epsilon:mlflow:challenger:0.3",
        "--domain",
        "eng",
        "--since",
        "2025-01-01T02:00:00",
        "--data-dir",
        var,
    )
    assert "Replay of mlflow:challenger@" in out and "(epsilon 0.3)" in out
    assert "-- domain eng" in out and "-- domain legal" not in out


def test_replay_on_routerbench_shows_the_exact_value(
    var: Path, bench_file: Path, trained: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = run(
        "replay",
        "--candidate",
        f"vw:{var / 'bench.vw'}",
        "--benchmark",
        "routerbench",
        "--benchmark-file",
        bench_file,
        "--n",
        "1500",
        "--seed",
        "4",
        "--json",
        var / "bench.json",
        "--data-dir",
        var,
    )
    assert out.startswith("Benchmark routerbench (test split, 318 prompts, 11 models)")
    assert "   reward  exact " in out
    assert "replay: scored 1500/1500 decisions" in capsys.readouterr().err
    reward = json.loads((var / "bench.json").read_text())["overall"]["outcomes"]["reward"]
    assert reward["exact"] > reward["logged"]["ci_high"]  # beats the uniform logging policy
    assert reward["dr"]["ci_low"] <= reward["exact"] <= reward["dr"]["ci_high"]
    strongest = run(
        "replay",
        "--candidate",
        "strongest",
        "--benchmark",
        "routerbench",
        "--benchmark-file",
        bench_file,
        "--n",
        "500",
        "--data-dir",
        var,
    )
    assert "Replay of strongest (dearest estimate)" in strongest


def test_promote_gate_rollback_and_history(var: Path, trained: dict[str, str]) -> None:
    lenient = (
        "--min-ess",
        "10",
        "--quality-tolerance",
        "1",
        "--max-spend-ratio",
        "100",
        "--margin",
        "-1",
    )
    out = run("promote", "1", *lenient, "--actor", "bob", "--reason", "first", "--data-dir", var)
    assert "Version 1 vs champion none" in out and "Off-policy comparison on 600" in out
    assert "domain legal" in out and "kind execution" in out
    assert "pass quality: no champion" in out
    assert "champion: none -> 1 (promote by bob: first)" in out

    message = fails("promote", "2", "--min-ess", "1e9", "--data-dir", var)
    assert (
        message
        == "budget-router promote: the gate refused version 2; pass --force to promote anyway"
    )
    assert registry(var).get_alias_version(CHAMPION) == "1"
    assert "failed the gate" in fails("gate", "challenger", "--min-ess", "1e9", "--data-dir", var)
    no_data = fails("promote", "2", "--since", "2030-01-01", "--data-dir", var)
    assert "gate refused version 2" in no_data

    out = run(
        "promote",
        "2",
        "--min-ess",
        "1e9",
        "--force",
        "--actor",
        "alice",
        "--reason",
        "trust me",
        "--data-dir",
        var,
    )
    assert "Gate: FAILED" in out and "FAIL ess:" in out
    assert "champion: 1 -> 2 (promote by alice: trust me (forced past the gate: FAIL ess" in out
    assert "already the champion" in fails("promote", "2", "--data-dir", var)

    out = run("rollback", "--actor", "carol", "--reason", "errors up", "--data-dir", var)
    assert "champion: 2 -> 1 (rollback by carol: errors up)" in out
    assert "no previous champion" in fails("rollback", "--data-dir", var)

    out = run("gate", "2", "--auto-promote", *lenient, "--data-dir", var)
    assert "Gate: passed" in out and "version 2 promoted to champion" in out

    out = run("models", "--data-dir", var)
    versions = out.split("Alias moves")[0]
    assert "  2        challenger,champion" in versions and "budget-router train" in versions
    assert "promoted" in versions  # version 2's gate outcome
    history = run("registry", "history", "--data-dir", var)
    assert history in out
    for line in (
        "challenger register  none -> 1     by budget-router train",
        "champion   promote   none -> 1     by bob: first",
        "champion   promote      1 -> 2     by alice: trust me (forced past the gate: FAIL ess",
        "champion   rollback     2 -> 1     by carol: errors up",
        "champion   promote      1 -> 2     by ",  # the OS user, through the gate
    ):
        assert line in history, line
    assert history.rstrip().splitlines()[-1].split(": ", 1)[1].startswith("gate passed: pass")


def test_errors_are_one_line(var: Path, trained: dict[str, str]) -> None:
    assert fails("promote", "99", "--data-dir", var).startswith("budget-router promote: ")
    assert "alias 'nope' is not set" in fails("gate", "nope", "--data-dir", var)
    assert "expected vw:PATH" in fails("replay", "--candidate", "gpt-4", "--data-dir", var)
    message = fails(
        "replay", "--candidate", "cheapest", "--logged", var / "none.parquet", "--data-dir", var
    )
    assert message.endswith("none.parquet does not exist")

    def unreachable(args: argparse.Namespace) -> Settings:
        return Settings(data_dir=args.data_dir, tracking_uri=f"http://127.0.0.1:{free_port()}")

    args = parser(unreachable).parse_args(["models", "--data-dir", str(var)])
    with pytest.raises(SystemExit) as exc:
        args.handler(args)
    assert str(exc.value.code).startswith("budget-router models: MLflow server http://127.0.0.1:")
    assert "unreachable" in str(exc.value.code)
