"""Prometheus metrics on a per-app registry, and one-JSON-object-per-line logging."""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from router_service.served import ServedDecision

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
NO_MODEL = "none"


class RouterMetrics:
    """The router's metrics, registered on their own registry so each app has its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "budget_router_decisions",
            "Decisions made, by chosen model, governor action and trust domain.",
            ["model", "action", "trust_domain"],
            registry=r,
        )
        self.decision_latency = Histogram(
            "budget_router_decision_latency_seconds",
            "Time to make one decision (policy and governor), in seconds.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.spend = Counter(
            "budget_router_spend_dollars",
            "Dollars booked from step outcomes, by trust domain.",
            ["trust_domain"],
            registry=r,
        )
        self.aborts = Counter(
            "budget_router_aborts",
            "Decisions the governor aborted, by trust domain and the rule that fired.",
            ["trust_domain", "rule"],
            registry=r,
        )
        self.outcomes = Counter(
            "budget_router_outcomes",
            "Step outcomes reported, by model and success.",
            ["model", "success"],
            registry=r,
        )
        self.spool_depth = Gauge(
            "budget_router_spool_depth",
            "Events waiting in the durable spool for the broker.",
            registry=r,
        )
        self.model = Info("budget_router_model", "The policy model version served.", registry=r)
        self.policy_stale = Gauge(
            "budget_router_policy_stale",
            "1 when the served model could not be refreshed and may be out of date.",
            registry=r,
        )
        self.policy_age = Gauge(
            "budget_router_policy_age_seconds",
            "Seconds since the served model was last refreshed.",
            registry=r,
        )
        self._refreshed_at = time.monotonic()
        self.policy_age.set_function(lambda: time.monotonic() - self._refreshed_at)

    def observe(self, decision: ServedDecision, seconds: float) -> None:
        """Count ``decision`` and how long it took; aborts are counted by the rule that fired."""
        domain = decision.trust_domain
        model = decision.model or NO_MODEL
        self.decisions.labels(model=model, action=decision.action, trust_domain=domain).inc()
        self.decision_latency.observe(seconds)
        if decision.action == "abort":
            fired = [rule for rule, action in decision.rules if action == "abort"] or ["unknown"]
            self.aborts.labels(trust_domain=domain, rule=fired[0]).inc()

    def observe_outcome(
        self, *, model: str, trust_domain: str, success: bool, cost_dollars: float
    ) -> None:
        """Count a step outcome and add its cost to the trust domain's spend."""
        self.outcomes.labels(model=model, success=str(success).lower()).inc()
        self.spend.labels(trust_domain=trust_domain).inc(cost_dollars)

    def set_spool_depth(self, n: int) -> None:
        """Set the number of events waiting in the spool."""
        self.spool_depth.set(n)

    def track_spool_depth(self, depth: Callable[[], int]) -> None:
        """Read the spool depth from ``depth`` at every scrape instead of setting it."""
        self.spool_depth.set_function(depth)

    def set_model(self, version: str, stale: bool, age_seconds: float) -> None:
        """Record the served model version, whether it is stale and how old it is now."""
        self.model.info({"version": version})
        self.policy_stale.set(1 if stale else 0)
        self._refreshed_at = time.monotonic() - age_seconds

    def render(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


metrics_router = APIRouter(tags=["health"])


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus scrape endpoint for ``app.state.router.metrics``."""
    body, content_type = request.app.state.router.metrics.render()
    return Response(content=body, media_type=content_type)


_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler ``configure_json_logging`` installed, so a second call replaces it."""


class _Handoff(logging.Handler):
    """Keeps records unformatted in a deque: no lock handoff or thread wake-up per record."""

    def __init__(self, records: deque[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def handle(self, record: logging.LogRecord) -> bool:
        self.records.append(record)  # deque.append is atomic: no handler lock needed
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class BackgroundLogWriter:
    """Formats and writes queued records on its own thread, a batch every ``interval`` s."""

    def __init__(self, handler: logging.Handler, interval: float = 0.05) -> None:
        self.records: deque[logging.LogRecord] = deque()
        self._handler = handler
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="json-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write every queued record, then stop; safe to call twice."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self._drain()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            self._drain()

    def _drain(self) -> None:
        records = self.records
        while records:
            self._handler.handle(records.popleft())


def configure_json_logging(
    level: int | str = logging.INFO, stream: IO[str] | None = None, *, background: bool = False
) -> BackgroundLogWriter | None:
    """Send the root logger's records as JSON lines to ``stream`` (stderr by default).

    With ``background``, a writer thread formats and writes them in batches, so a request
    never waits for its log line nor wakes a thread; the writer's ``stop()`` flushes the rest.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _JsonHandler | _Handoff)]:
        root.removeHandler(handler)
    handler = _JsonHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root.setLevel(level)
    if not background:
        root.addHandler(handler)
        return None
    writer = BackgroundLogWriter(handler)
    root.addHandler(_Handoff(writer.records))
    writer.start()
    atexit.register(writer.stop)
    return writer
