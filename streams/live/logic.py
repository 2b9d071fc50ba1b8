"""What the live UI receives: stream entries and server summaries built from samples."""

from __future__ import annotations

import orjson

from connectors.redis_live import LiveEvent, RedisSettings
from schemas import HealthChange, HealthState, MetricSample, RedisKeys


def summary(sample: MetricSample, health: HealthState, reasons: list[str]) -> dict[str, object]:
    """Compact view of a sample for the server list and the fleet stream."""
    return {
        "server_id": sample.server_id,
        "tenant": sample.tenant,
        "hostname": sample.hostname,
        "ts": sample.ts.isoformat(),
        "last_seen": sample.ts.isoformat(),
        "cpu": round(sample.cpu.total, 2),
        "mem": round(sample.memory.used_pct, 2),
        "health": health.value,
        "reasons": reasons,
    }


def full_sample(sample: MetricSample, health: str) -> bytes:
    """The validated sample as the schema defines it (coerced types, no unknown fields),
    with its health."""
    return sample.model_dump_json()[:-1].encode() + b',"health":"' + health.encode() + b'"}'


def sample_events(sample: MetricSample, brief: dict[str, object], keys: RedisKeys,
                  settings: RedisSettings) -> list[LiveEvent]:
    return [
        LiveEvent(keys.fleet_stream, "sample", orjson.dumps(brief).decode(),
                  settings.fleet_maxlen),
        LiveEvent(keys.server_stream(sample.server_id), "sample",
                  full_sample(sample, str(brief["health"])).decode(), settings.server_maxlen),
    ]


def late_sample_event(sample: MetricSample, health: str, keys: RedisKeys,
                      settings: RedisSettings) -> LiveEvent:
    """A sample older than the server's newest (replayed after an outage): it goes on the
    server's own stream, so no sample goes missing there, but not on the fleet stream,
    whose figures are the latest ones (clients drop points older than their last)."""
    return LiveEvent(keys.server_stream(sample.server_id), "sample",
                     full_sample(sample, health).decode(), settings.server_maxlen)


def health_events(change: HealthChange, keys: RedisKeys,
                  settings: RedisSettings) -> list[LiveEvent]:
    data = change.model_dump_json()
    return [
        LiveEvent(keys.fleet_stream, "health", data, settings.fleet_maxlen),
        LiveEvent(keys.server_stream(change.server_id), "health", data, settings.server_maxlen),
    ]


def apply_health(brief: dict[str, object], change: HealthChange) -> dict[str, object]:
    """A stored summary updated with a health change."""
    return {**brief, "health": change.state.value, "reasons": change.reasons}
