"""The channel table: every value a sample carries, flattened to a named channel.

A channel is what thresholds, charts and VictoriaMetrics series are keyed by
(``cpu.total`` is stored as the series ``fd_cpu_total{server=..., tenant=...}``).
Channels with a ``label`` have one series per item (core, disk, interface, mount,
process) and, where the sample has one, a total series without that label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from schemas.metrics import DiskIO, MetricSample, NetIO


@dataclass(frozen=True)
class Channel:
    name: str
    unit: str
    description: str
    label: str | None = None  # label that tells items apart, e.g. "disk"
    metric: str = field(init=False)  # VictoriaMetrics metric name

    def __post_init__(self) -> None:
        object.__setattr__(self, "metric", "fd_" + self.name.replace(".", "_"))


Point = tuple[Channel, dict[str, str], float]

CHANNELS: dict[str, Channel] = {}


def _ch(name: str, unit: str, description: str, label: str | None = None) -> Channel:
    channel = Channel(name, unit, description, label)
    CHANNELS[name] = channel
    return channel


CPU_TOTAL = _ch("cpu.total", "%", "CPU busy, all cores")
CPU_USER = _ch("cpu.user", "%", "CPU time in user mode")
CPU_SYSTEM = _ch("cpu.system", "%", "CPU time in kernel mode")
CPU_IOWAIT = _ch("cpu.iowait", "%", "CPU time waiting for I/O")
CPU_CORE = _ch("cpu.core", "%", "CPU busy per logical core", "core")
MEM_USED_PCT = _ch("mem.used_pct", "%", "Memory in use")
MEM_USED = _ch("mem.used_bytes", "B", "Memory in use")
MEM_AVAILABLE = _ch("mem.available_bytes", "B", "Memory available")
SWAP_USED_PCT = _ch("swap.used_pct", "%", "Swap in use")
LOAD1 = _ch("load.1", "", "Load average, 1 minute")
LOAD5 = _ch("load.5", "", "Load average, 5 minutes")
LOAD15 = _ch("load.15", "", "Load average, 15 minutes")
_DISK_FIELDS = ("read_bps", "write_bps", "read_ops", "write_ops")


def _unit(model: type[BaseModel], name: str) -> str:
    extra = model.model_fields[name].json_schema_extra
    return str(extra["unit"]) if isinstance(extra, dict) else ""


def _desc(model: type[BaseModel], name: str) -> str:
    return model.model_fields[name].description or name


_DISK = {f: _ch(f"disk.{f}", _unit(DiskIO, f), _desc(DiskIO, f), "disk") for f in _DISK_FIELDS}
_NET_FIELDS = ("rx_bps", "tx_bps", "rx_pps", "tx_pps", "rx_errs", "tx_errs", "rx_drops",
               "tx_drops")
_NET = {f: _ch(f"net.{f}", _unit(NetIO, f), _desc(NetIO, f), "iface") for f in _NET_FIELDS}
FS_USED_PCT = _ch("fs.used_pct", "%", "Filesystem space in use", "mount")
PROC_UP = _ch("proc.up", "", "Watched process is running (1) or not (0)", "process")
PROC_INSTANCES = _ch("proc.instances", "", "Running instances of a watched process", "process")
PROC_CPU = _ch("proc.cpu_pct", "%", "CPU of a watched process, of one core", "process")
PROC_RSS = _ch("proc.rss_bytes", "B", "Resident memory of a watched process", "process")
PROC_RESTARTS = _ch("proc.restarts", "", "Restarts of a watched process", "process")
PROC_ZOMBIES = _ch("proc.zombies", "", "Zombie instances of a watched process", "process")

_SCALARS: tuple[tuple[Channel, Callable[[MetricSample], float]], ...] = (
    (CPU_TOTAL, lambda s: s.cpu.total),
    (CPU_USER, lambda s: s.cpu.user),
    (CPU_SYSTEM, lambda s: s.cpu.system),
    (CPU_IOWAIT, lambda s: s.cpu.iowait),
    (MEM_USED_PCT, lambda s: s.memory.used_pct),
    (MEM_USED, lambda s: float(s.memory.used_bytes)),
    (MEM_AVAILABLE, lambda s: float(s.memory.available_bytes)),
    (SWAP_USED_PCT, lambda s: s.memory.swap_used_pct),
    (LOAD1, lambda s: s.load.load1),
    (LOAD5, lambda s: s.load.load5),
    (LOAD15, lambda s: s.load.load15),
)


def points(sample: MetricSample) -> Iterator[Point]:
    """Every channel value of ``sample`` with its item labels (none for totals)."""
    for channel, get in _SCALARS:
        yield channel, {}, float(get(sample))
    for core, value in enumerate(sample.cpu.per_core):
        yield CPU_CORE, {"core": str(core)}, float(value)
    for disk in (sample.disk, *sample.disks):
        labels = {} if disk is sample.disk else {"disk": disk.name}
        for field, channel in _DISK.items():
            yield channel, labels, float(getattr(disk, field))
    for nic in (sample.net, *sample.nets):
        labels = {} if nic is sample.net else {"iface": nic.name}
        for field, channel in _NET.items():
            yield channel, labels, float(getattr(nic, field))
    for fs in sample.filesystems:
        yield FS_USED_PCT, {"mount": fs.mount}, fs.used_pct
    for proc in sample.processes:
        labels = {"process": proc.name}
        yield PROC_UP, labels, 1.0 if proc.up else 0.0
        yield PROC_INSTANCES, labels, float(proc.instances)
        yield PROC_CPU, labels, proc.cpu_pct
        yield PROC_RSS, labels, float(proc.rss_bytes)
        yield PROC_RESTARTS, labels, float(proc.restarts)
        yield PROC_ZOMBIES, labels, float(proc.zombies)


def value_of(sample: MetricSample, name: str) -> float | None:
    """The total value of channel ``name`` in ``sample`` (None if the sample has none)."""
    for channel, labels, value in points(sample):
        if channel.name == name and not labels:
            return value
    return None
