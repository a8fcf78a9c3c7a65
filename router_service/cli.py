"""The ``budget-router`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="budget-router", description="Per-step LLM routing under per-task budgets."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="start the API server alone")
    serve_cmd.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve_cmd.add_argument("--data-dir", type=Path, help="where the service writes (./var)")
    serve_cmd.set_defaults(handler=serve)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.handler(args)
