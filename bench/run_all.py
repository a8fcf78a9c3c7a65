"""Every benchmark, then one summary page: ``python -m bench.run_all [--quick] [--out docs]``.

Runs the three parts (routing quality, agent workload, service performance), each writing its
own results into ``<out>/benchmarks/``, then writes ``<out>/benchmarks.md`` (machine, data,
seeds, commands, each part's headline table, links to the per-part pages and charts) and
``<out>/benchmarks.json`` (the same numbers). ``--reuse`` takes a part's results already in
``<out>/benchmarks/`` instead of running it again; the page says which parts were reused.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import BenchError, code_version, machine_facts


@dataclass(frozen=True)
class Part:
    """One benchmark: its module (with ``main(argv)``), results stem and title."""

    name: str
    module: str
    stem: str
    title: str


PARTS = (
    Part("routing_quality", "bench.routing_quality", "routing_quality", "Routing quality"),
    Part("agent_workload", "bench.agent_sim", "agent_workload", "Agent workload with budgets"),
    Part("service_perf", "bench.service_perf", "service_perf", "Service performance"),
)
DATA = (
    "RouterBench 0-shot outcomes (11 models, real per-call costs, MIT) and MMLU-Pro outcomes "
    "(7 priced models, Apache-2.0) for routing quality; mini-swe-agent step traces on "
    "SWE-bench (MIT) for the agent workload; seeded synthetic requests and events built by the "
    "router's own feature code for service performance. Sources and licenses: "
    "[bench/data/PROVENANCE.md](../bench/data/PROVENANCE.md)."
)


def run_part(part: Part, results_dir: Path, quick: bool, seed: int) -> dict[str, Any]:
    """Run one benchmark's ``main`` into ``results_dir``; its JSON document."""
    argv = ["--out", str(results_dir), "--seed", str(seed), *(["--quick"] if quick else [])]
    importlib.import_module(part.module).main(argv)
    return load_part(part, results_dir)


def load_part(part: Part, results_dir: Path) -> dict[str, Any]:
    """A part's JSON results as written in ``results_dir``."""
    path = results_dir / f"{part.stem}.json"
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError as exc:
        raise BenchError(f"--reuse {part.name}: {path} does not exist; run the part first") from exc


# -- headline tables --------------------------------------------------------------------------


def routing_headline(document: dict[str, Any]) -> dict[str, Any]:
    """Per data set: the live learned router beside the strong, weak, random and oracle."""
    headline: dict[str, Any] = {}
    for result in document["datasets"]:
        singles = {p["name"]: p for p in result["singles"]}
        rows = []
        if result.get("live"):
            rows.append(("learned router, live through the service", result["live"]))
        for label, name in (
            (f"strong model: {result['strong']}", result["strong"]),
            (f"weak model: {result['weak']}", result["weak"]),
            ("random (expected)", "random (expected)"),
            ("oracle", "oracle"),
        ):
            if name in singles:
                rows.append((label, singles[name]))
        headline[result["dataset"]] = {
            "test_prompts": result["test_prompts"],
            "rows": [
                {"policy": label, "accuracy": p["accuracy"], "cost": p["cost"]} for label, p in rows
            ],
            "aiq": result.get("aiq", {}),
        }
    return headline


def agent_headline(document: dict[str, Any]) -> dict[str, Any]:
    """Per policy: success, spend, budget used, overshoots, aborts, HTTP errors."""
    keys = ("success_rate", "mean_spend", "mean_budget_used", "overshoot_tasks", "aborts")
    return {
        name: {key: summary.get(key) for key in (*keys, "http_errors")}
        for name, summary in document["policies"].items()
    }


def perf_headline(document: dict[str, Any]) -> dict[str, Any]:
    """The targets' verdicts and the memory at the last count reached."""
    memory = document["results"]["memory"]
    return {
        "targets": document["targets"],
        "memory_last": {
            kind: {**memory[kind]["points"][-1], "bare_rss_kb": memory["bare"][kind]["rss_kb"]}
            for kind in ("router", "learner")
        },
    }


HEADLINES = {
    "routing_quality": routing_headline,
    "agent_workload": agent_headline,
    "service_perf": perf_headline,
}


def _routing_md(headline: dict[str, Any], stem: str) -> list[str]:
    lines = []
    for dataset, table in headline.items():
        lines += [
            f"**{dataset}** ({table['test_prompts']} test prompts; chart: "
            f"[{stem}_{dataset}.png](benchmarks/{stem}_{dataset}.png))",
            "",
            "| policy | accuracy | total cost $ |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {r['policy']} | {r['accuracy']:.3f} | {r['cost']:.3f} |" for r in table["rows"]
        ]
        aiq = ", ".join(f"{k} {v:.3f}" for k, v in table["aiq"].items() if k != "cost_range")
        lines += ["", f"AIQ (area under the cost-accuracy frontier): {aiq}.", ""]
    return lines[:-1]


def _agent_md(headline: dict[str, Any], stem: str) -> list[str]:
    lines = [
        f"Chart: [{stem}.png](benchmarks/{stem}.png)",
        "",
        "| policy | success | mean spend $ | budget used | overshoots | aborts | HTTP errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in headline.items():
        lines.append(
            f"| {name} | {s['success_rate']:.1%} | {s['mean_spend']:.4f} | "
            f"{s['mean_budget_used']:.0%} | {s['overshoot_tasks']} | {s['aborts']} | "
            f"{s['http_errors']} |"
        )
    return lines


def _perf_md(headline: dict[str, Any], stem: str) -> list[str]:
    lines = ["| target | goal | measured | met | missed by |", "|---|---|---:|---|---|"]
    for t in headline["targets"]:
        miss = "" if t["met"] else f"{t['miss_factor']:.1f}x"
        lines.append(
            f"| {t['target']} | {t['op']} {t['goal']:g} | {t['measured']:.3f} | "
            f"{'yes' if t['met'] else 'no'} | {miss} |"
        )
    lines.append("")
    for kind, m in headline["memory_last"].items():
        lines.append(
            f"- {kind} RSS after {m['at']:,} ({m['elapsed_s']:.0f} s): "
            f"{m['rss_kb'] / 1024:.1f} MB; bare interpreter with the same imports "
            f"{m['bare_rss_kb'] / 1024:.1f} MB."
        )
    return lines


RENDERERS = {"routing_quality": _routing_md, "agent_workload": _agent_md, "service_perf": _perf_md}


def write_summary(
    out: Path, documents: dict[str, dict[str, Any]], reused: set[str], command: str
) -> dict[str, Any]:
    """Write ``<out>/benchmarks.md`` and ``.json`` from the parts' documents; the JSON."""
    summary: dict[str, Any] = {
        "meta": {
            "command": command,
            "code": code_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "machine": machine_facts(),
            "data": DATA,
        },
        "parts": {},
    }
    m = summary["meta"]["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"- Command: `{command}` (`make bench` runs `python -m bench.run_all`)",
        f"- Summary written: {summary['meta']['date']}, code {summary['meta']['code']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['python']} on {m['os']}; {m['stack']}",
        f"- Data: {DATA}",
        "",
        "| part | command | seed | date | code | load (1 min) | wall s | results |",
        "|---|---|---:|---|---|---:|---:|---|",
    ]
    for part in PARTS:
        if part.name not in documents:
            continue
        meta = documents[part.name]["meta"]
        quick = " (quick)" if meta.get("quick") else ""
        again = " (results file reused, not rerun here)" if part.name in reused else ""
        lines.append(
            f"| {part.title}{quick}{again} | `{meta['command']}` | {meta.get('seed')} | "
            f"{meta.get('date')} | {meta.get('code')} | {meta['machine'].get('load')} | "
            f"{meta.get('wall_s')} | [{part.stem}.md](benchmarks/{part.stem}.md) |"
        )
    if reused:
        lines += [
            "",
            "Parts marked reused were not rerun by this command: their numbers come from the "
            "run in their row (its own command, date, code and load). `python -m bench.run_all` "
            "without `--reuse` reruns every part.",
        ]
    for part in PARTS:
        if part.name not in documents:
            continue
        headline = HEADLINES[part.name](documents[part.name])
        summary["parts"][part.name] = {
            "meta": documents[part.name]["meta"],
            "reused": part.name in reused,
            "results": f"benchmarks/{part.stem}.md",
            "headline": headline,
        }
        lines += ["", f"## {part.title}", "", f"Details: [{part.stem}.md](benchmarks/"]
        lines[-1] += f"{part.stem}.md)"
        lines += ["", *RENDERERS[part.name](headline, part.stem)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(summary, indent=1))
    (out / "benchmarks.md").write_text("\n".join(lines).rstrip() + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run (or reuse) every part, then write the summary page and JSON."""
    args_list = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--quick", action="store_true", help="each part's quick mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reuse",
        default="",
        help="comma-separated parts to read from <out>/benchmarks/ instead of running: "
        + ", ".join(p.name for p in PARTS),
    )
    args = parser.parse_args(args_list)
    reused = {name for name in args.reuse.split(",") if name}
    unknown = reused - {p.name for p in PARTS}
    if unknown:
        raise BenchError(
            f"--reuse: unknown parts {sorted(unknown)}; expected {[p.name for p in PARTS]}"
        )
    results_dir = args.out / "benchmarks"
    documents = {
        part.name: load_part(part, results_dir)
        if part.name in reused
        else run_part(part, results_dir, args.quick, args.seed)
        for part in PARTS
    }
    command = shlex.join(["python", "-m", "bench.run_all", *args_list])
    summary = write_summary(args.out, documents, reused, command)
    print((args.out / "benchmarks.md").read_text())
    return summary


if __name__ == "__main__":
    main()
