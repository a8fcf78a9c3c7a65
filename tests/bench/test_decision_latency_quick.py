"""The benchmark harness end to end in quick mode, and the load generator's bookkeeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bench import ProtocolError
from bench.decision_latency import main
from bench.http_load import closed_loop, get, open_loop, post_json

SECTIONS = ("## Machine", "## Setup", "## Results", "## Targets", "- Command: `", "- Date: ")


def test_quick_run_completes_without_failures_and_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "results" / "decision_latency.md"
    runs = main(["--out", str(out), "--quick"])
    assert [run.name for run in runs] == ["budget-router", "baseline FastAPI"]
    for run in runs:
        for result in (run.light, run.peak):
            assert result.count > 0, result
            assert result.errors == 0, result.failures
    text = out.read_text()
    for section in SECTIONS:
        assert section in text
    assert "Quick mode" in text
    assert "budget-router `POST /v1/decide`" in text and "baseline FastAPI" in text


async def _reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny HTTP/1.1 server: /fail answers 500, /chunked has no Content-Length, else 200."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        if head.startswith(b"GET /chunked"):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        else:
            status = b"500 Internal Server Error" if b" /fail " in head else b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
    writer.close()


@asynccontextmanager
async def tiny_server() -> AsyncIterator[int]:
    server = await asyncio.start_server(_reply, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def test_open_loop_sends_rate_times_duration_and_counts_non_2xx_as_errors() -> None:
    async def scenario() -> None:
        async with tiny_server() as port:
            requests = [post_json("/ok", b'{"a": 1}'), get("/fail")]
            result = await open_loop(
                "127.0.0.1", port, requests, rate=400, duration_s=0.25, connections=2
            )
            assert result.count == 100
            assert result.errors == 50 and result.failures == {"500": 50}
            assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms

    asyncio.run(scenario())


def test_closed_loop_uses_a_request_function_and_rejects_responses_without_length() -> None:
    async def scenario() -> None:
        async with tiny_server() as port:
            result = await closed_loop(
                "127.0.0.1", port, lambda i: get(f"/n/{i}"), concurrency=3, duration_s=0.1
            )
            assert result.count > 0 and result.errors == 0 and result.requests_per_s > 0
            with pytest.raises(ProtocolError, match="no Content-Length"):
                await closed_loop(
                    "127.0.0.1", port, [get("/chunked")], concurrency=1, duration_s=0.1
                )

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 0, "duration_s": 1}, "rate and duration_s"),
        ({"rate": 10, "duration_s": -1}, "rate and duration_s"),
    ],
)
def test_open_loop_rejects_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        asyncio.run(open_loop("127.0.0.1", 1, [get("/")], **kwargs))
