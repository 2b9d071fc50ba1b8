"""Health of a server, published on ``fd.health`` whenever it changes."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.envelope import Envelope, UtcDatetime


class HealthState(StrEnum):
    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    STALE = "STALE"  # samples late: older than the stale threshold
    OFFLINE = "OFFLINE"  # no sample for longer than the offline threshold

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {
    HealthState.OK: 0,
    HealthState.WARNING: 1,
    HealthState.CRITICAL: 2,
    HealthState.STALE: 3,
    HealthState.OFFLINE: 4,
}


class HealthChange(Envelope):
    """A server's health moved from ``previous`` to ``state``."""

    kind: Literal["health_change"] = "health_change"
    hostname: str = Field("", max_length=255)
    state: HealthState
    previous: HealthState | None = None
    reasons: list[str] = Field(default_factory=list, description="Why, e.g. 'cpu.total 97.0 >= 90'")
    last_seen: UtcDatetime | None = Field(None, description="Time of the newest sample")
