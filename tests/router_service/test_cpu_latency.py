"""The PM QoS request: the bound written as the kernel reads it, errors naming the setting."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydantic import ValidationError

from router_service.cpu_latency import hold_cpu_latency
from router_service.errors import ConfigError
from router_service.settings import Settings


def test_writes_the_bound_as_a_native_int32_and_keeps_the_file_open(tmp_path: Path) -> None:
    device = tmp_path / "cpu_dma_latency"
    handle = hold_cpu_latency(20, device)
    assert not handle.closed
    assert device.read_bytes() == struct.pack("i", 20)
    handle.close()


def test_a_device_it_cannot_open_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        hold_cpu_latency(0, tmp_path / "missing" / "cpu_dma_latency")
    assert error.value.field == "cpu_latency_us"
    assert "BUDGET_ROUTER_CPU_LATENCY_US=0" in str(error.value)


def test_the_setting_is_unset_by_default_and_refuses_negative_bounds(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).cpu_latency_us is None
    with pytest.raises(ValidationError, match="cpu_latency_us"):
        Settings(data_dir=tmp_path, cpu_latency_us=-1)
