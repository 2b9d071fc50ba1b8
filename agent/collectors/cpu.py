"""CPU busy percentages, total and per logical core (non-blocking, ``interval=None``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psutil

from schemas.metrics import CpuStats

if TYPE_CHECKING:
    from agent.collectors.registry import SampleParts


def pct(value: float) -> float:
    """``value`` clamped to 0..100 (psutil can round a hair outside)."""
    return min(100.0, max(0.0, float(value)))


class CpuCollector:
    """Percentages since the previous call; the constructor makes the priming call."""

    name = "cpu"

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)
        psutil.cpu_percent(interval=None, percpu=True)
        psutil.cpu_times_percent(interval=None)

    def collect(self, parts: SampleParts, now: float) -> None:
        total = psutil.cpu_percent(interval=None)
        per_core = psutil.cpu_percent(interval=None, percpu=True)
        times = psutil.cpu_times_percent(interval=None)
        parts.cpu = CpuStats(
            total=pct(total),
            per_core=[pct(v) for v in per_core],
            user=pct(times.user),
            system=pct(times.system),
            # Linux-only fields: detected by capability, absent elsewhere.
            iowait=pct(getattr(times, "iowait", 0.0)),
            steal=pct(getattr(times, "steal", 0.0)),
        )
