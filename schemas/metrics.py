"""Metric samples published by agents on ``fd.metrics``.

Every field carries its unit and description; the channel table in
:mod:`schemas.channels`, the UI and the JSON Schema export all read them from here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import Envelope


def _f(unit: str, description: str, **kw: Any) -> Any:
    return Field(description=description, json_schema_extra={"unit": unit}, **kw)


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class CpuStats(_Part):
    total: float = _f("%", "CPU busy, all cores", ge=0, le=100)
    per_core: list[float] = _f("%", "CPU busy per logical core", default_factory=list,
                               max_length=1024)
    user: float = _f("%", "Time in user mode", default=0.0)
    system: float = _f("%", "Time in kernel mode", default=0.0)
    iowait: float = _f("%", "Time waiting for I/O", default=0.0)
    steal: float = _f("%", "Time stolen by the hypervisor", default=0.0)


class MemoryStats(_Part):
    total_bytes: int = _f("B", "Physical memory", ge=0)
    used_bytes: int = _f("B", "Memory in use (total minus available)", ge=0)
    available_bytes: int = _f("B", "Memory available without swapping", ge=0)
    used_pct: float = _f("%", "Memory in use", ge=0, le=100)
    swap_total_bytes: int = _f("B", "Swap size", default=0, ge=0)
    swap_used_bytes: int = _f("B", "Swap in use", default=0, ge=0)
    swap_used_pct: float = _f("%", "Swap in use", default=0.0, ge=0, le=100)


class LoadStats(_Part):
    load1: float = _f("", "Load average over 1 minute", default=0.0)
    load5: float = _f("", "Load average over 5 minutes", default=0.0)
    load15: float = _f("", "Load average over 15 minutes", default=0.0)


class DiskIO(_Part):
    name: str = _f("", "Disk name, or 'total'", max_length=128)
    read_bps: float = _f("B/s", "Bytes read per second", default=0.0, ge=0)
    write_bps: float = _f("B/s", "Bytes written per second", default=0.0, ge=0)
    read_ops: float = _f("ops/s", "Read operations per second", default=0.0, ge=0)
    write_ops: float = _f("ops/s", "Write operations per second", default=0.0, ge=0)


class NetIO(_Part):
    name: str = _f("", "Interface name, or 'total'", max_length=128)
    rx_bps: float = _f("B/s", "Bytes received per second", default=0.0, ge=0)
    tx_bps: float = _f("B/s", "Bytes sent per second", default=0.0, ge=0)
    rx_pps: float = _f("packets/s", "Packets received per second", default=0.0, ge=0)
    tx_pps: float = _f("packets/s", "Packets sent per second", default=0.0, ge=0)
    rx_errs: float = _f("errors/s", "Receive errors per second", default=0.0, ge=0)
    tx_errs: float = _f("errors/s", "Transmit errors per second", default=0.0, ge=0)
    rx_drops: float = _f("drops/s", "Received packets dropped per second", default=0.0, ge=0)
    tx_drops: float = _f("drops/s", "Sent packets dropped per second", default=0.0, ge=0)


class FsUsage(_Part):
    mount: str = _f("", "Mount point", max_length=4096)
    device: str = _f("", "Device", default="", max_length=4096)
    fstype: str = _f("", "Filesystem type", default="", max_length=64)
    total_bytes: int = _f("B", "Filesystem size", ge=0)
    used_bytes: int = _f("B", "Space in use", ge=0)
    used_pct: float = _f("%", "Space in use", ge=0, le=100)


class ProcessHealth(_Part):
    name: str = _f("", "Watched process name", max_length=256)
    up: bool = _f("", "At least one instance is running")
    instances: int = _f("", "Running instances", default=0, ge=0)
    cpu_pct: float = _f("%", "CPU of all instances, of one core", default=0.0, ge=0)
    rss_bytes: int = _f("B", "Resident memory of all instances", default=0, ge=0)
    restarts: int = _f("", "Times the process was seen restarting since the agent started",
                       default=0, ge=0)
    zombies: int = _f("", "Zombie instances", default=0, ge=0)


class MetricSample(Envelope):
    """One sample of one server, taken every ``interval_s`` seconds by its agent."""

    kind: Literal["metric_sample"] = "metric_sample"
    hostname: str = Field(max_length=255, description="Host name reported by the agent")
    seq: int = Field(0, ge=0, description="Sample counter of this agent run")
    interval_s: float = Field(1.0, gt=0, description="Sampling interval (s)")
    cpu: CpuStats
    memory: MemoryStats
    load: LoadStats = Field(default_factory=LoadStats)
    disk: DiskIO = Field(default_factory=lambda: DiskIO(name="total"))
    disks: list[DiskIO] = Field(default_factory=list, max_length=256)
    net: NetIO = Field(default_factory=lambda: NetIO(name="total"))
    nets: list[NetIO] = Field(default_factory=list, max_length=256)
    filesystems: list[FsUsage] = Field(default_factory=list, max_length=256)
    processes: list[ProcessHealth] = Field(default_factory=list, max_length=256,
                                           description="Watched processes (at most 256)")
