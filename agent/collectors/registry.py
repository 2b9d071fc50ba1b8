"""The explicit collector registry and the :class:`Sampler` that runs it once per interval.

Collectors are listed in :data:`REGISTRY` by hand (no module scanning). Each one fills its own
fields of a :class:`SampleParts`; the sampler turns the parts into a
:class:`~schemas.metrics.MetricSample`. A collector that raises leaves its fields at their
defaults (zeros, empty lists) and is logged once until it recovers: ``sample()`` never fails
because of one collector.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.collectors.cpu import CpuCollector
from agent.collectors.disk import DiskCollector
from agent.collectors.filesystem import FilesystemCollector
from agent.collectors.load import LoadCollector
from agent.collectors.memory import MemoryCollector
from agent.collectors.net import NetCollector
from agent.collectors.process import ProcessCollector
from schemas.envelope import utcnow
from schemas.metrics import (
    CpuStats,
    DiskIO,
    FsUsage,
    LoadStats,
    MemoryStats,
    MetricSample,
    NetIO,
    ProcessHealth,
)

logger = logging.getLogger(__name__)

EMPTY_CPU = CpuStats(total=0.0)
EMPTY_MEMORY = MemoryStats(total_bytes=0, used_bytes=0, available_bytes=0, used_pct=0.0)
EMPTY_LOAD = LoadStats()
EMPTY_DISK = DiskIO(name="total")
EMPTY_NET = NetIO(name="total")


@dataclass(slots=True)
class SampleParts:
    """The parts of one sample, filled in by the collectors (defaults = nothing measured)."""

    cpu: CpuStats = EMPTY_CPU
    memory: MemoryStats = EMPTY_MEMORY
    load: LoadStats = EMPTY_LOAD
    disk: DiskIO = EMPTY_DISK
    disks: list[DiskIO] = field(default_factory=list)
    net: NetIO = EMPTY_NET
    nets: list[NetIO] = field(default_factory=list)
    filesystems: list[FsUsage] = field(default_factory=list)
    processes: list[ProcessHealth] = field(default_factory=list)


class Collector(Protocol):
    """Measures one part of the host; ``now`` is ``time.monotonic()`` for the whole sample."""

    name: str

    def collect(self, parts: SampleParts, now: float) -> None: ...


CollectorFactory = Callable[[Sequence[str]], Collector]

#: Collector name → factory taking the watched process names. Order is sampling order.
REGISTRY: dict[str, CollectorFactory] = {
    "cpu": lambda _watch: CpuCollector(),
    "memory": lambda _watch: MemoryCollector(),
    "load": lambda _watch: LoadCollector(),
    "disk": lambda _watch: DiskCollector(),
    "net": lambda _watch: NetCollector(),
    "filesystem": lambda _watch: FilesystemCollector(),
    "process": ProcessCollector,
}


def build_collectors(watch: Sequence[str]) -> list[Collector]:
    """One instance of every registered collector; one that cannot start is logged and left out."""
    collectors: list[Collector] = []
    for name, factory in REGISTRY.items():
        try:
            collectors.append(factory(watch))
        except Exception:
            logger.warning("collector %s could not start; it is disabled", name, exc_info=True)
    return collectors


class Sampler:
    """Runs the collectors and builds one :class:`MetricSample` per call of :meth:`sample`."""

    def __init__(
        self,
        server_id: str,
        tenant: str,
        hostname: str,
        watch: list[str],
        *,
        interval_s: float = 1.0,
        collectors: Sequence[Collector] | None = None,
    ) -> None:
        # Validate the identity once, here, so that a bad setting fails at start-up.
        MetricSample(server_id=server_id, tenant=tenant, hostname=hostname,
                     interval_s=interval_s, cpu=EMPTY_CPU, memory=EMPTY_MEMORY)
        self.server_id, self.tenant, self.hostname = server_id, tenant, hostname
        self.interval_s = interval_s
        self.watch = list(dict.fromkeys(watch))
        self._collectors = list(collectors) if collectors is not None else (
            build_collectors(self.watch))
        self._failing: set[str] = set()

    def sample(self, seq: int) -> MetricSample:
        """Measure everything once; never raises because a collector failed."""
        ts, now = utcnow(), time.monotonic()
        parts = SampleParts()
        for collector in self._collectors:
            self._run(collector, parts, now)
        return MetricSample(
            server_id=self.server_id, tenant=self.tenant, hostname=self.hostname, ts=ts,
            seq=seq, interval_s=self.interval_s, cpu=parts.cpu, memory=parts.memory,
            load=parts.load, disk=parts.disk, disks=parts.disks, net=parts.net,
            nets=parts.nets, filesystems=parts.filesystems, processes=parts.processes,
        )

    def _run(self, collector: Collector, parts: SampleParts, now: float) -> None:
        name = collector.name
        try:
            collector.collect(parts, now)
        except Exception:
            if name in self._failing:
                logger.debug("collector %s failed again", name, exc_info=True)
            else:
                self._failing.add(name)
                logger.warning("collector %s failed; using defaults", name, exc_info=True)
            return
        if name in self._failing:
            self._failing.discard(name)
            logger.info("collector %s recovered", name)
