"""Every model that crosses a process boundary, plus topic and key names.

This package imports nothing else of the repository.
"""

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
    "Channel",
    "CpuStats",
    "DeadLetter",
    "DiskIO",
    "Envelope",
    "FsUsage",
    "HealthChange",
    "HealthState",
    "LoadStats",
    "MemoryStats",
    "MetricSample",
    "NetIO",
    "ProcessHealth",
    "RedisKeys",
    "Topic",
    "new_id",
    "points",
    "utcnow",
    "value_of",
]
