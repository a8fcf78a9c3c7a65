"""Benchmarks of the service over real HTTP; results are written to ``docs/benchmarks/``."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import ClassVar


class BenchError(Exception):
    """Root of every error the benchmarks raise on purpose."""

    retriable: ClassVar[bool] = False


class ServerUnavailable(BenchError):
    """The server under test did not start, did not become ready, or dropped a connection."""

    retriable = True


class ProtocolError(BenchError):
    """A response the load generator cannot parse (it reads Content-Length bodies only)."""


def machine_facts() -> dict[str, str]:
    """What every benchmark report states about where it ran: CPU, cores, Python, stack."""
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
    }
