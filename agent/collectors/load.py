"""Load averages (1, 5, 15 minutes)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import psutil

from schemas.metrics import LoadStats

if TYPE_CHECKING:
    from agent.collectors.registry import SampleParts


def _loadavg_source() -> Callable[[], tuple[float, float, float]]:
    # os.getloadavg reads /proc/loadavg directly; psutil emulates it where the OS has none.
    return os.getloadavg if hasattr(os, "getloadavg") else psutil.getloadavg


class LoadCollector:
    name = "load"

    def __init__(self) -> None:
        self._getloadavg = _loadavg_source()

    def collect(self, parts: SampleParts, now: float) -> None:
        load1, load5, load15 = self._getloadavg()
        parts.load = LoadStats(load1=load1, load5=load5, load15=load15)
