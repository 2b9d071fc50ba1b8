"""Health of watched processes, matched by process name.

Reading every process's name each second is what makes agents expensive (one or two ``/proc``
reads per process), so names are kept in a :class:`NameIndex`: a new pid is looked up once, every
``rescan_s`` seconds all names are checked again (a process that ``exec``-ed into a watched name
after it was first seen is found then at the latest), and a process younger than ``SETTLE_S`` is
looked up again until it is old enough not to be between ``fork`` and ``exec``. Matched
processes are read every sample; a matched pid whose name changed is dropped at once.

A restart is counted when all instances were replaced between two samples (no pid in common),
or when the name comes back up after being down, having been up before. Counting any change of
the pid set would count every new worker (a postgres backend per connection) as a restart.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import psutil

from schemas.metrics import ProcessHealth

if TYPE_CHECKING:
    from agent.collectors.registry import SampleParts

SETTLE_S = 2.0
RESCAN_S = 10.0

Identity = tuple[int, float]


class _Entry(NamedTuple):
    proc: psutil.Process | None  # None: the process cannot be read (hidepid), do not retry
    name: str
    settled: bool


def _lookup(pid: int, previous: _Entry | None) -> _Entry | None:
    """Name of ``pid``; reuses ``previous.proc`` when it is the same process (keeps its CPU
    baseline). ``None`` when the process is gone."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            name = proc.name()
            created = proc.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return _Entry(None, "", True)
    if previous and previous.proc and previous.proc.create_time() == created:
        proc = previous.proc
    return _Entry(proc, name, time.time() - created >= SETTLE_S)


class NameIndex:
    """pid → name of every process, refreshed incrementally (see the module docstring)."""

    def __init__(self, rescan_s: float = RESCAN_S) -> None:
        self.rescan_s = rescan_s
        self._entries: dict[int, _Entry] = {}
        self._next_rescan = 0.0

    def refresh(self, now: float) -> None:
        rescan = now >= self._next_rescan
        if rescan:
            self._next_rescan = now + self.rescan_s
        entries, fresh = self._entries, {}
        for pid in psutil.pids():
            entry = entries.get(pid)
            if entry is None or rescan or not entry.settled:
                entry = _lookup(pid, entry)
            if entry is not None:
                fresh[pid] = entry
        self._entries = fresh

    def matching(self, names: Collection[str]) -> dict[str, list[psutil.Process]]:
        found: dict[str, list[psutil.Process]] = {}
        for entry in self._entries.values():
            if entry.proc is not None and entry.name in names:
                found.setdefault(entry.name, []).append(entry.proc)
        return found

    def forget(self, pid: int) -> None:
        self._entries.pop(pid, None)


@dataclass(slots=True)
class _Watch:
    """What is remembered about one watched name between samples."""

    ids: frozenset[Identity] = frozenset()
    ever_up: bool = False
    restarts: int = 0

    def observe(self, ids: frozenset[Identity]) -> None:
        if ids:
            replaced = bool(self.ids) and self.ids.isdisjoint(ids)
            returned = not self.ids and self.ever_up
            if replaced or returned:
                self.restarts += 1
            self.ever_up = True
        self.ids = ids


@dataclass(slots=True)
class _Tally:
    ids: set[Identity] = field(default_factory=set)
    zombies: int = 0
    cpu: float = 0.0
    rss: int = 0


class ProcessCollector:
    name = "process"

    def __init__(self, watch: Sequence[str], rescan_s: float = RESCAN_S) -> None:
        self._watch = {name: _Watch() for name in dict.fromkeys(watch)}
        self._index = NameIndex(rescan_s)

    def collect(self, parts: SampleParts, now: float) -> None:
        if not self._watch:  # nothing watched: do not touch /proc at all
            parts.processes = []
            return
        self._index.refresh(now)
        found = self._index.matching(self._watch)
        parts.processes = [self._health(name, watch, found.get(name, ()))
                           for name, watch in self._watch.items()]

    def _health(self, name: str, watch: _Watch,
                procs: Sequence[psutil.Process]) -> ProcessHealth:
        tally = _Tally()
        for proc in procs:
            if not self._measure(proc, name, tally):
                self._index.forget(proc.pid)
        watch.observe(frozenset(tally.ids))
        return ProcessHealth(name=name, up=bool(tally.ids), instances=len(tally.ids),
                             cpu_pct=tally.cpu, rss_bytes=tally.rss,
                             restarts=watch.restarts, zombies=tally.zombies)

    @staticmethod
    def _measure(proc: psutil.Process, name: str, tally: _Tally) -> bool:
        """Add ``proc`` to ``tally``; False when it is gone or no longer called ``name``."""
        try:
            with proc.oneshot():
                if proc.name() != name:
                    return False
                if proc.status() == psutil.STATUS_ZOMBIE:
                    tally.zombies += 1
                    return True
                cpu, rss = _usage(proc)
        except psutil.ZombieProcess:
            tally.zombies += 1
            return True
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:
            cpu, rss = 0.0, 0
        tally.ids.add((proc.pid, proc.create_time()))
        tally.cpu += cpu
        tally.rss += rss
        return True


def _usage(proc: psutil.Process) -> tuple[float, int]:
    """CPU % of one core since the previous call on this object (0.0 the first time), RSS."""
    try:
        rss = proc.memory_info().rss
    except psutil.AccessDenied:
        rss = 0
    return proc.cpu_percent(interval=None), rss
