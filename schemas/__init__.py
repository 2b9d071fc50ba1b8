"""Every model that crosses a process boundary, plus topic and key names.

This package imports nothing else of the repository.
"""

from schemas.alerts import (
    AlertAction,
    AlertEvent,
    AlertRule,
    AlertState,
    Matcher,
    Severity,
    Silence,
    alert_id,
)
from schemas.channels import CHANNELS, Channel, points, value_of
from schemas.deadletter import DeadLetter
from schemas.envelope import ID_PATTERN, SCHEMA_VERSION, Envelope, new_id, utcnow
from schemas.health import HealthChange, HealthState
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
from schemas.topics import ALL_TOPICS, RedisKeys, Topic

__all__ = [
    "ALL_TOPICS",
    "CHANNELS",
    "ID_PATTERN",
    "SCHEMA_VERSION",
    "AlertAction",
    "AlertEvent",
    "AlertRule",
    "AlertState",
    "Channel",
    "CpuStats",
    "DeadLetter",
    "DiskIO",
    "Envelope",
    "FsUsage",
    "HealthChange",
    "HealthState",
    "LoadStats",
    "Matcher",
    "MemoryStats",
    "MetricSample",
    "NetIO",
    "ProcessHealth",
    "RedisKeys",
    "Severity",
    "Silence",
    "Topic",
    "alert_id",
    "new_id",
    "points",
    "utcnow",
    "value_of",
]
