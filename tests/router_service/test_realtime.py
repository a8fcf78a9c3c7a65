"""Serving under SCHED_FIFO: every thread, later ones too, and back to normal on release."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from router_service import realtime
from router_service.embedded_broker import free_port
from router_service.errors import ConfigError
from router_service.settings import Settings
from tests.router_processes import router_env, router_process


def _fifo_refusal() -> str | None:
    """Why this machine refuses SCHED_FIFO (no CAP_SYS_NICE, no real-time budget), or None."""
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return result.stderr.strip().splitlines()[-1] if result.returncode else None


needs_fifo = pytest.mark.skipif(
    (refusal := _fifo_refusal()) is not None,
    reason=f"this machine refuses SCHED_FIFO to the tests: {refusal}",
)

# In a child process: the test runner itself must not run under SCHED_FIFO.
_CHILD = textwrap.dedent(
    """
    import os, threading
    from router_service.realtime import hold_realtime, thread_ids

    def policies():
        return {os.sched_getscheduler(tid) for tid in thread_ids()}

    before = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    before.start()
    release = hold_realtime(7)
    after = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    after.start()
    held = policies()
    priority = os.sched_getparam(after.native_id).sched_priority
    release()
    print(held == {os.SCHED_FIFO}, len(thread_ids()), priority, policies() == {os.SCHED_OTHER})
    """
)


@needs_fifo
def test_every_thread_runs_under_fifo_until_released() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.split() == ["True", "3", "7", "True"]


def test_refused_priority_names_the_setting_and_leaves_the_policy_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def refuse(tid: int, policy: int, param: os.sched_param) -> None:
        calls.append(policy)
        if policy == os.SCHED_FIFO:
            raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(realtime.os, "sched_setscheduler", refuse)
    with pytest.raises(ConfigError) as error:
        realtime.hold_realtime(5)
    assert error.value.field == "realtime_priority"
    assert "BUDGET_ROUTER_REALTIME_PRIORITY=5" in str(error.value)
    assert "CAP_SYS_NICE" in str(error.value)
    assert calls[-1] == os.SCHED_OTHER  # put back after the refusal


@pytest.mark.parametrize("priority", [0, 100])
def test_priority_outside_1_to_99_is_refused(tmp_path, priority: int) -> None:  # type: ignore[no-untyped-def]
    assert Settings(data_dir=tmp_path).realtime_priority is None
    with pytest.raises(ValidationError, match="realtime_priority"):
        Settings(data_dir=tmp_path, realtime_priority=priority)


@needs_fifo
def test_serve_runs_its_threads_under_fifo(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = router_env(BUDGET_ROUTER_REALTIME_PRIORITY="3")
    with router_process("serve", port, tmp_path / "data", env, tmp_path / "serve.log") as proc:
        tids = os.listdir(f"/proc/{proc.pid}/task")
        policies = {os.sched_getscheduler(int(tid)) for tid in tids}
        priorities = {os.sched_getparam(int(tid)).sched_priority for tid in tids}
    assert len(tids) > 1  # the spool, checkpoint and log threads inherited it
    assert (policies, priorities) == ({os.SCHED_FIFO}, {3})
