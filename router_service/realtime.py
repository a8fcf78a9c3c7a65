"""Serve at a real-time scheduling priority (Linux ``SCHED_FIFO``), ahead of other processes.

On a machine the router shares with its learner, broker or anything else, a decision that
becomes runnable while those hold every CPU waits for their time slice to end; on the 2-core
benchmark machine with other work on it, that wait set the p99 more than the decision's own
work did (docs/benchmarks/service_perf.md). A ``SCHED_FIFO`` thread
runs as soon as it is runnable. Every thread of the process gets the priority, and threads
started later inherit it: a background thread (spool, delivery, logs) that holds the GIL and
waits for a CPU stalls the event loop just the same. The kernel's real-time throttling
(``/proc/sys/kernel/sched_rt_runtime_us``, 95% of each second by default) keeps a saturated
router from starving the rest of the machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from router_service.errors import ConfigError

SETTING = "BUDGET_ROUTER_REALTIME_PRIORITY"
_TASKS = Path("/proc/self/task")


def hold_realtime(priority: int) -> Callable[[], None]:
    """Put every thread of this process under ``SCHED_FIFO`` at ``priority`` (1-99); the
    function returned puts them back under the normal policy."""
    try:
        _set_all(os.SCHED_FIFO, priority)
    except OSError as exc:
        _set_all(os.SCHED_OTHER, 0)
        raise ConfigError(
            f"{SETTING}={priority}: cannot run the router under SCHED_FIFO ({exc.strerror}); "
            "it needs CAP_SYS_NICE (root, or the capability granted to the container), or "
            f"leave {SETTING} unset",
            field="realtime_priority",
        ) from exc
    return lambda: _set_all(os.SCHED_OTHER, 0)


def thread_ids() -> list[int]:
    """The kernel ids of this process's threads."""
    return [int(tid) for tid in os.listdir(_TASKS)]


def _set_all(policy: int, priority: int) -> None:
    for tid in thread_ids():
        try:
            os.sched_setscheduler(tid, policy, os.sched_param(priority))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
