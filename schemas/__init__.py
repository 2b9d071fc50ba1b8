"""Every model that crosses a process boundary, plus topic and key names.

This package imports nothing else of the repository. Its names load on first use (PEP 562):
``import schemas.envelope`` in the agent does not pull in the alert models (and re2) or any
other module it never uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: each exported name -> the module that defines it
_WHERE = {
    "ALL_TOPICS": "schemas.topics",
    "AlertAction": "schemas.alerts",
    "AlertEvent": "schemas.alerts",
    "AlertRule": "schemas.alerts",
    "AlertState": "schemas.alerts",
    "CHANNELS": "schemas.channels",
    "Channel": "schemas.channels",
    "CpuStats": "schemas.metrics",
    "DeadLetter": "schemas.deadletter",
    "DiskIO": "schemas.metrics",
    "Envelope": "schemas.envelope",
    "FsUsage": "schemas.metrics",
    "HealthChange": "schemas.health",
    "HealthState": "schemas.health",
    "ID_PATTERN": "schemas.envelope",
    "LoadStats": "schemas.metrics",
    "Matcher": "schemas.alerts",
    "MemoryStats": "schemas.metrics",
    "MetricSample": "schemas.metrics",
    "NetIO": "schemas.metrics",
    "ProcessHealth": "schemas.metrics",
    "RedisKeys": "schemas.topics",
    "SCHEMA_VERSION": "schemas.envelope",
    "Severity": "schemas.alerts",
    "Silence": "schemas.alerts",
    "Topic": "schemas.topics",
    "alert_id": "schemas.alerts",
    "new_id": "schemas.envelope",
    "points": "schemas.channels",
    "utcnow": "schemas.envelope",
    "value_of": "schemas.channels",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
