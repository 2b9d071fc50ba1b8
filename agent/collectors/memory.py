"""Physical memory and swap."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import psutil

from agent.collectors.cpu import pct
from schemas.metrics import MemoryStats

if TYPE_CHECKING:
    from agent.collectors.registry import SampleParts

logger = logging.getLogger(__name__)


def _swap() -> tuple[int, int, float]:
    """(total, used, percent) of swap; zeros where swap cannot be read (some containers)."""
    try:
        swap = psutil.swap_memory()
    except (OSError, RuntimeError):
        logger.debug("swap not readable", exc_info=True)
        return 0, 0, 0.0
    return swap.total, swap.used, swap.percent


class MemoryCollector:
    name = "memory"

    def collect(self, parts: SampleParts, now: float) -> None:
        vm = psutil.virtual_memory()
        swap_total, swap_used, swap_pct = _swap()
        parts.memory = MemoryStats(
            total_bytes=vm.total,
            used_bytes=max(0, vm.total - vm.available),
            available_bytes=vm.available,
            used_pct=pct(vm.percent),
            swap_total_bytes=swap_total,
            swap_used_bytes=swap_used,
            swap_used_pct=pct(swap_pct),
        )
