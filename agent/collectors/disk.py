"""Disk I/O rates per whole disk and in total (bytes/s, operations/s).

Raw kernel counters are read (``nowrap=False``) and turned into rates by :mod:`agent.rates`,
which handles wraps and resets. Partitions (``sda1`` when ``sda`` exists) are left out so the
total does not count their I/O twice, and so are loop, RAM and zram devices. Stacked devices
(device-mapper, md RAID: a ``slaves`` folder that is not empty) are listed but kept out of the
total, since their I/O is already counted on the disks below them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

import psutil

from agent.rates import RateTracker
from schemas.metrics import DiskIO

if TYPE_CHECKING:
    from agent.collectors.registry import SampleParts

SYS_BLOCK = "/sys/block"
SKIP_PREFIXES = ("loop", "ram", "zram")
#: DiskIO field → psutil counter field.
FIELDS = (("read_bps", "read_bytes"), ("write_bps", "write_bytes"),
          ("read_ops", "read_count"), ("write_ops", "write_count"))
_PARTITION_SUFFIX = re.compile(r"p?\d+$")


def whole_disks(names: Iterable[str], block_devices: Collection[str] | None) -> list[str]:
    """The names that are whole disks: in ``block_devices`` (the ``/sys/block`` entries) when
    known, otherwise not a partition of another name (``sda1``/``sda``, ``nvme0n1p1``/``nvme0n1``).
    """
    names = [n for n in names if not n.startswith(SKIP_PREFIXES)]
    if block_devices is not None:
        return [n for n in names if n.replace("/", "!") in block_devices]
    present = set(names)
    return [n for n in names if not _is_partition(n, present)]


def _is_partition(name: str, present: Collection[str]) -> bool:
    base = _PARTITION_SUFFIX.sub("", name)
    return base != name and base in present


def _listdir(path: str) -> list[str] | None:
    try:
        return os.listdir(path)
    except OSError:
        return None


def _is_stacked(name: str, sys_block: str) -> bool:
    return bool(_listdir(os.path.join(sys_block, name.replace("/", "!"), "slaves")))


class DiskCollector:
    name = "disk"

    def __init__(self, sys_block: str = SYS_BLOCK, forget_after: float = 300.0) -> None:
        self._sys_block = sys_block
        self._rates: RateTracker[tuple[str, str]] = RateTracker(forget_after)
        self._seen: tuple[str, ...] | None = None
        self._disks: list[str] = []
        self._physical: frozenset[str] = frozenset()

    def collect(self, parts: SampleParts, now: float) -> None:
        counters = psutil.disk_io_counters(perdisk=True, nowrap=False) or {}
        self._classify(tuple(counters))
        disks = [self._disk(name, counters[name], now) for name in self._disks]
        total = DiskIO(name="total", **{
            field: sum(getattr(d, field) for d in disks if d.name in self._physical)
            for field, _ in FIELDS})
        self._rates.prune(now)
        parts.disks, parts.disk = disks, total

    def _classify(self, names: tuple[str, ...]) -> None:
        """Recompute which names are disks and which count in the total, when devices change."""
        if names == self._seen:
            return
        block = _listdir(self._sys_block)  # missing or empty (some sandboxes): guess by name
        self._disks = whole_disks(names, set(block) if block else None)
        self._physical = frozenset(
            n for n in self._disks if not _is_stacked(n, self._sys_block))
        self._seen = names

    def _disk(self, name: str, counters: Any, now: float) -> DiskIO:
        rate = self._rates.rate_or_zero
        return DiskIO(name=name, **{
            field: rate((name, source), getattr(counters, source), now)
            for field, source in FIELDS})
