"""Samples as VictoriaMetrics lines, and 1-minute rollups (min/avg/max per channel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from schemas import MetricSample, points
from schemas.channels import totals

ROLLUP_AGGREGATES = ("min", "avg", "max")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@lru_cache(maxsize=65_536)
def _base_labels(server_id: str, tenant: str) -> str:
    return f'server="{escape_label(server_id)}",tenant="{escape_label(tenant)}"'


def _shape(sample: MetricSample) -> tuple[object, ...]:
    """What decides a sample's series: its id, and the names of its items."""
    return (sample.server_id, sample.tenant, len(sample.cpu.per_core),
            tuple(d.name for d in sample.disks), tuple(n.name for n in sample.nets),
            tuple(f.mount for f in sample.filesystems), tuple(p.name for p in sample.processes))


def _make_prefixes(sample: MetricSample) -> tuple[str, ...]:
    """``metric{labels} `` of every point of ``sample``, in points() order."""
    base = _base_labels(sample.server_id, sample.tenant)
    return tuple(f"{ch.metric}{{{base}}} " if item is None or ch.label is None else
                 f'{ch.metric}{{{base},{ch.label}="{escape_label(item)}"}} '
                 for ch, item, _ in points(sample))


_BY_SHAPE: dict[tuple[object, ...], tuple[str, ...]] = {}
_MAX_SHAPES = 50_000


def _prefixes(sample: MetricSample) -> tuple[str, ...]:
    """Series names of a sample, built once per server and shape (they rarely change)."""
    shape = _shape(sample)
    prefixes = _BY_SHAPE.get(shape)
    if prefixes is None:
        if len(_BY_SHAPE) >= _MAX_SHAPES:
            _BY_SHAPE.clear()
        prefixes = _BY_SHAPE[shape] = _make_prefixes(sample)
    return prefixes


def to_lines(sample: MetricSample) -> list[str]:
    """Prometheus text lines (millisecond timestamps) for every channel of ``sample``."""
    ts = f" {int(sample.ts.timestamp() * 1000)}"
    return [f"{prefix}{point[2]!r}{ts}"
            for prefix, point in zip(_prefixes(sample), points(sample), strict=True)]


@dataclass
class _Bucket:
    lo: float
    hi: float
    total: float = 0.0
    count: int = 0
    dirty: bool = True

    def add(self, value: float) -> None:
        self.lo, self.hi = min(self.lo, value), max(self.hi, value)
        self.total += value
        self.count += 1
        self.dirty = True


@dataclass
class Rollups:
    """Min/avg/max per (series, minute) of the total channels (no per-item series).

    A minute is flushed once it is ``grace_s`` old; buckets are kept for ``keep_s`` so a
    late sample (replayed after an outage) re-flushes the whole, corrected minute.
    """

    grace_s: float = 5.0
    keep_s: float = 900.0
    minutes: dict[int, dict[tuple[str, str], _Bucket]] = field(default_factory=dict)
    _dirty: set[int] = field(default_factory=set)

    def add(self, sample: MetricSample) -> None:
        minute = int(sample.ts.timestamp()) // 60 * 60
        buckets = self.minutes.setdefault(minute, {})
        self._dirty.add(minute)
        labels = _base_labels(sample.server_id, sample.tenant)
        for channel, value in totals(sample):
            key = (channel.metric, labels)
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = _Bucket(value, value, value, 1)
            else:
                bucket.add(value)

    def flush(self, now: float) -> list[str]:
        """Lines for every closed minute that changed since its last flush."""
        for minute in [m for m in self.minutes if m + 60 + self.keep_s < now]:
            del self.minutes[minute]
            self._dirty.discard(minute)
        lines: list[str] = []
        for minute in sorted(m for m in self._dirty if m + 60 + self.grace_s <= now):
            self._dirty.discard(minute)
            ts_ms = minute * 1000
            for (metric, labels), bucket in self.minutes.get(minute, {}).items():
                if not bucket.dirty:
                    continue
                bucket.dirty = False
                values = {"min": bucket.lo, "avg": bucket.total / bucket.count, "max": bucket.hi}
                lines.extend(f"{metric}:1m_{agg}{{{labels}}} {values[agg]!r} {ts_ms}"
                             for agg in ROLLUP_AGGREGATES)
        return lines
