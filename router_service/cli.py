"""The ``budget-router`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from learner.lifecycle_cli import add_lifecycle_commands
from router_service.metrics import configure_json_logging
from router_service.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"budget-router: invalid settings: {problems}") from exc


def serve(args: argparse.Namespace) -> None:
    """Start the API server alone."""
    import uvicorn

    from router_service.app import create_app

    settings = _settings(args)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
    )


def up(args: argparse.Namespace) -> None:
    """Start broker (unless one is configured), learner and router; Ctrl-C stops them."""
    from router_service.stack import run_stack

    raise SystemExit(run_stack(_settings(args)))


def learn(args: argparse.Namespace) -> None:
    """Run the incremental learner against the configured broker."""
    from learner.online import run_online_learner

    settings = _settings(args)
    bootstrap = settings.kafka.bootstrap_servers
    if not bootstrap:
        raise SystemExit(
            "budget-router learn: BUDGET_ROUTER_KAFKA__BOOTSTRAP_SERVERS is not set "
            "(expected host:port of a Kafka broker; `budget-router up` starts one)"
        )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_online_learner(settings, bootstrap, stop)


def learner_status(args: argparse.Namespace) -> None:
    """Print what the learner last reported: events, lag, lambda, model snapshot."""
    from learner.service import read_status

    settings = _settings(args)
    status = read_status(settings.data_dir)
    if status is None:
        raise SystemExit(f"no learner has run with data dir {settings.data_dir}")
    print(json.dumps(status, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="budget-router", description="Per-step LLM routing under per-task budgets."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str, port: bool = False) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        sub = commands.add_parser(name, help=help_text)
        if port:
            sub.add_argument("--port", type=int, help="port to listen on (default 8080)")
        sub.add_argument("--data-dir", type=Path, help="where the service writes (./var)")
        sub.set_defaults(handler=handler)
        return sub

    command("serve", serve, "start the API server alone", port=True)
    command("up", up, "start broker, learner and router together", port=True)
    command("learn", learn, "run the incremental learner")
    add_lifecycle_commands(commands, _settings)
    learner_cmd = commands.add_parser("learner", help="inspect the learner")
    learner_sub = learner_cmd.add_subparsers(dest="learner_command", required=True)
    status = learner_sub.add_parser("status", help="events, lag, lambda, model version")
    status.add_argument("--data-dir", type=Path, help="the learner's data dir (./var)")
    status.set_defaults(handler=learner_status)
    return parser


def main(argv: list[str] | None = None) -> None:
    configure_json_logging(logging.INFO, background=True)
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.handler(args)


if __name__ == "__main__":
    main()
