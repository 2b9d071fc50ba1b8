"""The channel table: every value a sample carries, flattened to a named channel.

A channel is what thresholds, charts and VictoriaMetrics series are keyed by
(``cpu.total`` is stored as the series ``fd_cpu_total{server=..., tenant=...}``).
Channels with a ``label`` have one series per item (core, disk, interface, mount,
process) and, where the sample has one, a total series without that label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter

from pydantic import BaseModel

from schemas.metrics import DiskIO, MetricSample, NetIO, ProcessHealth

Extract = Callable[[MetricSample], Iterable[tuple[str | None, float]]]


@dataclass(frozen=True)
class Channel:
    name: str
    unit: str
    description: str
    label: str | None = None  # label that tells items apart, e.g. "disk"
    extract: Extract = field(default=lambda s: (), repr=False, compare=False)
    metric: str = field(init=False)  # VictoriaMetrics metric name

    def __post_init__(self) -> None:
        object.__setattr__(self, "metric", "fd_" + self.name.replace(".", "_"))

    def labels(self, item: str | None) -> dict[str, str]:
        return {} if item is None or self.label is None else {self.label: item}


#: (channel, item or None for the total, value)
Point = tuple[Channel, str | None, float]

CHANNELS: dict[str, Channel] = {}


def _ch(name: str, unit: str, description: str, label: str | None, extract: Extract) -> Channel:
    channel = Channel(name, unit, description, label, extract)
    CHANNELS[name] = channel
    return channel


def _scalar(get: Callable[[MetricSample], float]) -> Extract:
    return lambda s: ((None, float(get(s))),)


def _unit(model: type[BaseModel], name: str) -> str:
    extra = model.model_fields[name].json_schema_extra
    return str(extra["unit"]) if isinstance(extra, dict) else ""


def _desc(model: type[BaseModel], name: str) -> str:
    return model.model_fields[name].description or name


def _disk(name: str) -> Extract:
    get = attrgetter(name)
    return lambda s: [(None, get(s.disk)), *((d.name, get(d)) for d in s.disks)]


def _net(name: str) -> Extract:
    get = attrgetter(name)
    return lambda s: [(None, get(s.net)), *((n.name, get(n)) for n in s.nets)]


def _proc(get: Callable[[ProcessHealth], float]) -> Extract:
    return lambda s: [(p.name, float(get(p))) for p in s.processes]


CPU_TOTAL = _ch("cpu.total", "%", "CPU busy, all cores", None, _scalar(lambda s: s.cpu.total))
CPU_USER = _ch("cpu.user", "%", "CPU time in user mode", None, _scalar(lambda s: s.cpu.user))
CPU_SYSTEM = _ch("cpu.system", "%", "CPU time in kernel mode", None,
                 _scalar(lambda s: s.cpu.system))
CPU_IOWAIT = _ch("cpu.iowait", "%", "CPU time waiting for I/O", None,
                 _scalar(lambda s: s.cpu.iowait))
CPU_CORE = _ch("cpu.core", "%", "CPU busy per logical core", "core",
               lambda s: [(str(i), v) for i, v in enumerate(s.cpu.per_core)])
MEM_USED_PCT = _ch("mem.used_pct", "%", "Memory in use", None,
                   _scalar(lambda s: s.memory.used_pct))
MEM_USED = _ch("mem.used_bytes", "B", "Memory in use", None,
               _scalar(lambda s: s.memory.used_bytes))
MEM_AVAILABLE = _ch("mem.available_bytes", "B", "Memory available", None,
                    _scalar(lambda s: s.memory.available_bytes))
SWAP_USED_PCT = _ch("swap.used_pct", "%", "Swap in use", None,
                    _scalar(lambda s: s.memory.swap_used_pct))
LOAD1 = _ch("load.1", "", "Load average, 1 minute", None, _scalar(lambda s: s.load.load1))
LOAD5 = _ch("load.5", "", "Load average, 5 minutes", None, _scalar(lambda s: s.load.load5))
LOAD15 = _ch("load.15", "", "Load average, 15 minutes", None, _scalar(lambda s: s.load.load15))
for _f in ("read_bps", "write_bps", "read_ops", "write_ops"):
    _ch(f"disk.{_f}", _unit(DiskIO, _f), _desc(DiskIO, _f), "disk", _disk(_f))
for _f in ("rx_bps", "tx_bps", "rx_pps", "tx_pps", "rx_errs", "tx_errs", "rx_drops",
           "tx_drops"):
    _ch(f"net.{_f}", _unit(NetIO, _f), _desc(NetIO, _f), "iface", _net(_f))
FS_USED_PCT = _ch("fs.used_pct", "%", "Filesystem space in use", "mount",
                  lambda s: [(f.mount, f.used_pct) for f in s.filesystems])
PROC_UP = _ch("proc.up", "", "Watched process is running (1) or not (0)", "process",
              _proc(lambda p: 1.0 if p.up else 0.0))
PROC_INSTANCES = _ch("proc.instances", "", "Running instances of a watched process", "process",
                     _proc(lambda p: p.instances))
PROC_CPU = _ch("proc.cpu_pct", "%", "CPU of a watched process, of one core", "process",
               _proc(lambda p: p.cpu_pct))
PROC_RSS = _ch("proc.rss_bytes", "B", "Resident memory of a watched process", "process",
               _proc(lambda p: p.rss_bytes))
PROC_RESTARTS = _ch("proc.restarts", "", "Restarts of a watched process", "process",
                    _proc(lambda p: p.restarts))
PROC_ZOMBIES = _ch("proc.zombies", "", "Zombie instances of a watched process", "process",
                   _proc(lambda p: p.zombies))

#: channels that have a total (a value without an item label)
TOTAL_CHANNELS = tuple(c for c in CHANNELS.values()
                       if c.label is None or c.label in ("disk", "iface"))


def points(sample: MetricSample) -> Iterator[Point]:
    """Every channel value of ``sample``: (channel, item or None for the total, value)."""
    for channel in CHANNELS.values():
        for item, value in channel.extract(sample):
            yield channel, item, value


def totals(sample: MetricSample) -> Iterator[tuple[Channel, float]]:
    """The total value of every channel that has one."""
    for channel in TOTAL_CHANNELS:
        for item, value in channel.extract(sample):
            if item is None:
                yield channel, value
                break


def value_of(sample: MetricSample, name: str) -> float | None:
    """The total value of channel ``name`` in ``sample`` (None if the sample has none)."""
    for item, value in CHANNELS[name].extract(sample):
        if item is None:
            return value
    return None
