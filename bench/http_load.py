"""A small HTTP/1.1 load generator: pre-encoded requests over keep-alive asyncio connections.

Two modes. ``open_loop`` sends at a fixed rate and measures each request from the time it
was due, so a stalled server cannot hide its queue (no coordinated omission). ``closed_loop``
keeps ``concurrency`` connections busy back to back and reports the throughput reached.
Responses must carry a Content-Length (FastAPI/uvicorn JSON responses do).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench import BENCH_ADMIN_KEY, ProtocolError, ServerUnavailable

RequestSource = Sequence[bytes] | Callable[[int], bytes]
"""The i-th request's bytes: a list (cycled) or a function of the request's index."""

T = TypeVar("T")


def post_json(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    """One complete keep-alive HTTP/1.1 POST of a JSON ``body``, ready to write."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {BENCH_ADMIN_KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def get(path: str, host: str = "127.0.0.1") -> bytes:
    """One complete keep-alive HTTP/1.1 GET, ready to write."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {BENCH_ADMIN_KEY}\r\n\r\n"
    ).encode("ascii")


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured; latencies in milliseconds, nearest-rank percentiles."""

    label: str
    count: int
    errors: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    failures: dict[str, int] = field(default_factory=dict)

    @classmethod
    def summarize(
        cls, label: str, latencies_s: list[float], failures: Counter[str], duration_s: float
    ) -> LoadResult:
        """Percentiles over every completed request (failed ones included), rate over the run."""
        ordered = sorted(latencies_s)
        return cls(
            label=label,
            count=len(ordered),
            errors=sum(failures.values()),
            duration_s=duration_s,
            requests_per_s=len(ordered) / duration_s if duration_s > 0 else 0.0,
            p50_ms=_nearest_rank(ordered, 0.50) * 1e3,
            p90_ms=_nearest_rank(ordered, 0.90) * 1e3,
            p99_ms=_nearest_rank(ordered, 0.99) * 1e3,
            max_ms=(ordered[-1] if ordered else 0.0) * 1e3,
            failures=dict(failures),
        )


def _nearest_rank(ordered: list[float], q: float) -> float:
    """The measured value at rank ceil(q * n): never interpolated between two samples."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class Connection:
    """One keep-alive connection that sends a request and reads its whole response."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> Connection:
        try:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise ServerUnavailable(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return self

    async def exchange(self, request: bytes) -> int:
        """Write ``request``, read the response, return its status code."""
        if self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lowered = head.lower()
        marker = lowered.find(b"\r\ncontent-length:")
        if marker >= 0:
            end = lowered.index(b"\r\n", marker + 2)
            await self._reader.readexactly(int(lowered[marker + 17 : end]))
        elif not (100 <= status < 200 or status in (204, 304)):
            raise ProtocolError(
                f"response {status} from {self.host}:{self.port} has no Content-Length; "
                "expected a Content-Length body (chunked responses are not supported)"
            )
        if b"\r\nconnection: close" in lowered:
            await self.close()
        return status

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


class _Recorder:
    """Latencies and failures of one run, shared by its connections (one event loop)."""

    def __init__(self, source: RequestSource) -> None:
        if callable(source):
            self.request_for: Callable[[int], bytes] = source
        else:
            if not source:
                raise ValueError("source: expected at least one request, got an empty list")
            self.request_for = lambda i: source[i % len(source)]
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self.next_index = 0
        self.last_done = 0.0

    def take(self) -> int:
        index = self.next_index
        self.next_index += 1
        return index

    async def send(self, connection: Connection, index: int, origin: float) -> None:
        """Send request ``index``; its latency runs from ``origin`` to the response's end."""
        try:
            status = await connection.exchange(self.request_for(index))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.failures[type(exc).__name__] += 1
            await connection.close()
        else:
            if not 200 <= status < 300:
                self.failures[str(status)] += 1
        self.last_done = time.perf_counter()
        self.latencies.append(self.last_done - origin)


async def send_each(
    host: str, port: int, requests: Sequence[bytes], connections: int = 4
) -> list[int]:
    """Send every request once, spread over ``connections``; their status codes, in order."""
    pool = [await Connection(host, port).connect() for _ in range(connections)]
    statuses = [0] * len(requests)

    async def worker(connection: Connection) -> None:
        for index in range(pool.index(connection), len(requests), connections):
            statuses[index] = await connection.exchange(requests[index])

    await _drive(worker, pool)
    return statuses


async def _pool(host: str, port: int | Sequence[int], connections: int) -> list[Connection]:
    """``connections`` open connections; with several ports (replicas), spread over them."""
    ports = [port] if isinstance(port, int) else list(port)
    return [await Connection(host, ports[n % len(ports)]).connect() for n in range(connections)]


async def open_loop(
    host: str,
    port: int | Sequence[int],
    source: RequestSource,
    *,
    rate: float,
    duration_s: float,
    connections: int = 8,
    label: str | None = None,
) -> LoadResult:
    """Send ``rate`` requests per second for ``duration_s``; latency counts from the due time.

    A request whose connection was free when it fell due is timed from its actual send, so the
    client's own timer slack is not billed to the server; one that fell due while every
    connection was busy is timed from when it was due, so the server's queue is.
    """
    if rate <= 0 or duration_s <= 0:
        raise ValueError(f"rate and duration_s: expected > 0, got {rate} and {duration_s}")
    total = max(1, int(rate * duration_s))
    interval = 1.0 / rate
    recorder = _Recorder(source)
    pool = await _pool(host, port, connections)
    start = time.perf_counter()

    async def worker(connection: Connection) -> None:
        while (index := recorder.take()) < total:
            due = start + index * interval
            free_at = time.perf_counter()
            if free_at < due:
                await asyncio.sleep(due - free_at)
                origin = time.perf_counter()
            else:
                origin = due
            await recorder.send(connection, index, origin)

    await _drive(worker, pool)
    return LoadResult.summarize(
        label or f"open loop {rate:g} req/s",
        recorder.latencies,
        recorder.failures,
        recorder.last_done - start,
    )


async def closed_loop(
    host: str,
    port: int | Sequence[int],
    source: RequestSource,
    *,
    concurrency: int,
    duration_s: float,
    label: str | None = None,
) -> LoadResult:
    """Keep ``concurrency`` connections busy for ``duration_s``; report the rate reached."""
    if concurrency <= 0 or duration_s <= 0:
        raise ValueError(
            f"concurrency and duration_s: expected > 0, got {concurrency} and {duration_s}"
        )
    recorder = _Recorder(source)
    pool = await _pool(host, port, concurrency)
    start = time.perf_counter()
    deadline = start + duration_s

    async def worker(connection: Connection) -> None:
        while time.perf_counter() < deadline:
            await recorder.send(connection, recorder.take(), time.perf_counter())

    await _drive(worker, pool)
    return LoadResult.summarize(
        label or f"closed loop {concurrency} connections",
        recorder.latencies,
        recorder.failures,
        recorder.last_done - start,
    )


async def _drive(
    worker: Callable[[Connection], Coroutine[Any, Any, None]], pool: list[Connection]
) -> None:
    """Run one worker per connection; the first failure stops them all and closes the pool."""
    tasks = [asyncio.ensure_future(worker(connection)) for connection in pool]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(connection.close() for connection in pool))


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a load coroutine on uvloop when it is installed (a cheaper client), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def markdown_table(rows: list[tuple[str, LoadResult]]) -> str:
    """A markdown table of results; latencies to the microsecond, rates to 0.1 req/s."""
    lines = [
        "| server | load | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r.label} | {r.count} | {r.errors} | {r.requests_per_s:.1f} | "
            f"{r.p50_ms:.3f} | {r.p90_ms:.3f} | {r.p99_ms:.3f} | {r.max_ms:.3f} |"
        )
    return "\n".join(lines)
