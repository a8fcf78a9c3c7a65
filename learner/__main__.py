"""``python -m learner``: run the incremental learner until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from learner.service import NoStore, run_learner
from learner.settings import LearnerError, LearnerSettings


def parse_args(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m learner",
        description="Learn the routing policy from the events topic "
        "(other settings: BUDGET_ROUTER_LEARNER_* environment variables).",
    )
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--bootstrap-servers")
    parser.add_argument("--topic")
    parser.add_argument("--dead-letter-topic")
    parser.add_argument("--group-id")
    parser.add_argument("--model-path", type=Path)
    parser.add_argument("--no-store", action="store_true", help="do not write the feature store")
    parser.add_argument("--log-level", default="INFO")
    return {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.pop("log_level").upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    no_store = args.pop("no_store")
    settings = LearnerSettings(**args)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        run_learner(settings, stop, store=NoStore() if no_store else None)
    except LearnerError as exc:
        logging.getLogger("learner").error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
