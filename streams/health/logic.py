"""Server health from samples (OK / WARNING / CRITICAL) and from silence (STALE / OFFLINE).

Plain synchronous code; the worker calls it for every sample and once a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, Field, model_validator

from schemas import CHANNELS, HealthChange, HealthState, MetricSample


class Threshold(BaseModel):
    """``channel`` at or above ``warning`` is WARNING, at or above ``critical`` is CRITICAL.

    Item channels (``fs.used_pct``, ``proc.cpu_pct``...) are checked for every item.
    """

    channel: str
    warning: float
    critical: float

    @model_validator(mode="after")
    def _check(self) -> Threshold:
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r}")
        if self.critical < self.warning:
            raise ValueError("critical must be >= warning")
        return self


DEFAULT_THRESHOLDS = [
    Threshold(channel="cpu.total", warning=85, critical=95),
    Threshold(channel="mem.used_pct", warning=85, critical=95),
    Threshold(channel="swap.used_pct", warning=60, critical=90),
    Threshold(channel="fs.used_pct", warning=85, critical=95),
]


class HealthPolicy(BaseModel):
    thresholds: list[Threshold] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    process_down: HealthState = Field(HealthState.CRITICAL,
                                      description="Health when a watched process is down")
    stale_after_s: float = Field(5.0, gt=0, description="No sample for this long: STALE")
    offline_after_s: float = Field(30.0, gt=0, description="No sample for this long: OFFLINE")


def evaluate(sample: MetricSample, policy: HealthPolicy) -> tuple[HealthState, list[str]]:
    """Health of one sample and the reasons for anything not OK."""
    state, reasons = HealthState.OK, []
    for limit in policy.thresholds:
        for item, value in CHANNELS[limit.channel].extract(sample):
            if value < limit.warning:
                continue
            level = HealthState.CRITICAL if value >= limit.critical else HealthState.WARNING
            where = "" if item is None else f"[{item}]"
            bound = limit.critical if level is HealthState.CRITICAL else limit.warning
            reasons.append(f"{limit.channel}{where} {value:.1f} >= {bound:g}")
            state = max(state, level, key=lambda s: s.rank)
    for proc in sample.processes:
        if not proc.up:
            reasons.append(f"process {proc.name} down")
            state = max(state, policy.process_down, key=lambda s: s.rank)
    return state, reasons


@dataclass
class ServerHealth:
    server_id: str
    tenant: str
    hostname: str
    state: HealthState
    reasons: list[str]
    last_seen: datetime
    seen_at: float  # monotonic-ish clock of the worker when the newest sample arrived


@dataclass
class HealthTracker:
    """Health per server; emits a HealthChange when a server's state changes."""

    policy: HealthPolicy
    servers: dict[str, ServerHealth] = field(default_factory=dict)

    def observe(self, sample: MetricSample, now: float) -> HealthChange | None:
        state, reasons = evaluate(sample, self.policy)
        known = self.servers.get(sample.server_id)
        if known is not None and sample.ts < known.last_seen:
            known.seen_at = max(known.seen_at, now)  # late (replayed) sample: history only
            return None
        self.servers[sample.server_id] = ServerHealth(
            sample.server_id, sample.tenant, sample.hostname, state, reasons, sample.ts, now)
        if known is not None and known.state == state:
            return None  # same state (reasons may differ): not a change
        return _change(self.servers[sample.server_id], None if known is None else known.state)

    def sweep(self, now: float) -> list[HealthChange]:
        """STALE / OFFLINE for servers that went quiet."""
        changes = []
        for server in self.servers.values():
            silent = now - server.seen_at
            if silent >= self.policy.offline_after_s:
                new = HealthState.OFFLINE
            elif silent >= self.policy.stale_after_s:
                new = HealthState.STALE
            else:
                continue
            if new != server.state:
                previous, server.state = server.state, new
                server.reasons = [f"no sample for {silent:.0f} s"]
                changes.append(_change(server, previous))
        return changes

    def restore(self, server: ServerHealth) -> None:
        """Seed a server known from before a worker restart (it stays silent until it reports)."""
        self.servers.setdefault(server.server_id, server)


def _change(server: ServerHealth, previous: HealthState | None) -> HealthChange:
    return HealthChange(server_id=server.server_id, tenant=server.tenant,
                        hostname=server.hostname, state=server.state, previous=previous,
                        reasons=list(server.reasons), last_seen=server.last_seen,
                        ts=datetime.now(UTC))
