"""Network rates per interface and in total (bytes, packets, errors, drops per second).

Raw kernel counters are read (``nowrap=False``) and turned into rates by :mod:`agent.rates`.
Loopback stays in the per-interface list but not in the total, which is meant to be traffic in
and out of the host. (Virtual interfaces such as bridges and veth pairs are counted as they are:
telling them apart needs more than a name.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psutil

from agent.rates import RateTracker
from schemas.metrics import NetIO

if TYPE_CHECKING:
    from agent.collectors.registry import SampleParts

LOOPBACK = frozenset({"lo", "lo0"})
#: NetIO field → psutil counter field.
FIELDS = (("rx_bps", "bytes_recv"), ("tx_bps", "bytes_sent"),
          ("rx_pps", "packets_recv"), ("tx_pps", "packets_sent"),
          ("rx_errs", "errin"), ("tx_errs", "errout"),
          ("rx_drops", "dropin"), ("tx_drops", "dropout"))


class NetCollector:
    name = "net"

    def __init__(self, forget_after: float = 300.0) -> None:
        self._rates: RateTracker[tuple[str, str]] = RateTracker(forget_after)

    def collect(self, parts: SampleParts, now: float) -> None:
        counters = psutil.net_io_counters(pernic=True, nowrap=False) or {}
        nets = [self._nic(name, nic, now) for name, nic in counters.items()]
        total = NetIO(name="total", **{
            field: sum(getattr(n, field) for n in nets if n.name not in LOOPBACK)
            for field, _ in FIELDS})
        self._rates.prune(now)
        parts.nets, parts.net = nets, total

    def _nic(self, name: str, counters: Any, now: float) -> NetIO:
        rate = self._rates.rate_or_zero
        return NetIO(name=name, **{
            field: rate((name, source), getattr(counters, source), now)
            for field, source in FIELDS})
