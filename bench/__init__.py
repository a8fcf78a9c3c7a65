"""Benchmarks of the service over real HTTP, and the harness they share.

Results are written to ``docs/benchmarks/``. The harness: the package's errors, a server
process started on loopback and awaited on ``/readyz``, and the facts every report states.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import ClassVar

from router_service.embedded_broker import stop_process

REPO_ROOT = Path(__file__).resolve().parents[1]


BENCH_ADMIN_KEY = "bench-admin-key-not-a-secret-0001"
"""The admin key benchmark servers are started with and every benchmark request carries."""


class BenchError(Exception):
    """Root of every error the benchmarks raise on purpose."""

    retriable: ClassVar[bool] = False


class ServerUnavailable(BenchError):
    """The server under test did not start, did not become ready, or refused a connection."""

    retriable = True


class ProtocolError(BenchError):
    """A response the load generator cannot parse (it reads Content-Length bodies only)."""


@contextlib.contextmanager
def server_process(
    command: list[str], port: int, log_path: Path, ready_timeout_s: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (a server on loopback ``port``) from when /readyz answers 200 to exit.

    The server imports the code of the checkout these benchmarks live in (``PYTHONPATH``),
    not whatever else is installed; its output goes to ``log_path``.
    """
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "BUDGET_ROUTER_ADMIN_KEY": BENCH_ADMIN_KEY,
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_ready(process, port, log_path, ready_timeout_s)
            yield process
        finally:
            stop_process(process, timeout=10)


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerUnavailable(
                f"server exited with code {process.returncode} before /readyz on port {port}; "
                f"log {log}:\n{log.read_text(errors='replace')[-2000:]}"
            )
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.05)
    raise ServerUnavailable(f"GET /readyz on port {port} did not answer 200 within {timeout_s}s")


def code_version() -> str:
    """The git commit measured, and whether tracked files had uncommitted changes."""
    try:
        commit, dirty = (
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), *args],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            for args in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "-uno"])
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} with uncommitted changes" if dirty else f"{commit}, clean tree"


def machine_facts() -> dict[str, str]:
    """What every benchmark report states about where it ran: CPU, cores, Python, stack, load."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in ("fastapi", "pydantic", "uvicorn", "uvloop", "httptools"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "stack": ", ".join(versions),
        "load": f"{os.getloadavg()[0]:.2f}",
    }
