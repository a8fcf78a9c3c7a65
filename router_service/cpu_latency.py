"""Keep idle CPUs from sleeping deeply while the router serves (Linux PM QoS).

A request that arrives on a CPU that halted between requests runs on cold caches: on the
benchmark's virtual machine a decision costs 1.07 ms of CPU after a 2.5 ms pause against
0.41 ms back to back. Writing a latency bound to ``/dev/cpu_dma_latency`` and keeping the file
open asks the kernel's idle governor for shallow states (0: poll) until the file is closed;
this is what tuned's latency-performance profile does. It costs power, and on a virtual machine
host CPU, for as long as the router runs.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from router_service.errors import ConfigError

DEVICE = Path("/dev/cpu_dma_latency")
SETTING = "BUDGET_ROUTER_CPU_LATENCY_US"


def hold_cpu_latency(max_us: int, device: Path = DEVICE) -> BinaryIO:
    """Ask for idle states that wake within ``max_us``; the request lasts while the file is open."""
    try:
        handle = device.open("wb", buffering=0)
    except OSError as exc:
        raise ConfigError(
            f"{SETTING}={max_us}: cannot open {device} ({exc.strerror}); the router needs "
            "write access to it (root, or the device mounted into the container), or leave "
            f"{SETTING} unset",
            field="cpu_latency_us",
        ) from exc
    handle.write(struct.pack("i", max_us))
    return handle
