"""Time-series queries for the charts: parameters, the VictoriaMetrics query, reshaping.

Plain functions: the bench sends exactly :func:`build_query` straight to VictoriaMetrics
to measure the API's overhead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from schemas import CHANNELS
from ui.errors import bad_parameter

RANGES = {"15m": 900, "1h": 3600, "6h": 21600, "24h": 86400}
_DURATION = re.compile(r"^([0-9]{1,5})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_RANGE_S = 31 * 86400
TARGET_POINTS = 720
DEFAULT_CHANNELS = ("cpu.total", "mem.used_pct")


@dataclass(frozen=True)
class SeriesQuery:
    server_id: str
    tenant: str  # the caller's: the query selects only this tenant's series
    channels: tuple[str, ...]
    range_s: int
    step_s: int
    end: float

    @property
    def start(self) -> float:
        return self.end - self.range_s


def parse_range(text: str) -> int:
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise bad_parameter("range", f"{text!r} is not a duration like 15m, 1h, 6h or 24h")
    seconds = int(match[1]) * _UNIT_S[match[2]]
    if not 60 <= seconds <= MAX_RANGE_S:
        raise bad_parameter("range", "must be between 1m and 31d")
    return seconds


def parse_channels(text: str | None) -> tuple[str, ...]:
    if text is None or not text.strip():
        return DEFAULT_CHANNELS
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in CHANNELS]
    if unknown:
        raise bad_parameter("channels", f"unknown channel(s) {', '.join(unknown)}; known: "
                            f"{', '.join(CHANNELS)}")
    if len(names) > 32:
        raise bad_parameter("channels", "at most 32 channels per request")
    return names


def parse_step(text: str | None, range_s: int) -> int:
    if text is None:
        return max(1, round(range_s / TARGET_POINTS))
    try:
        step = int(text)
    except ValueError:
        raise bad_parameter("step", f"{text!r} is not a whole number of seconds") from None
    if not 1 <= step <= range_s:
        raise bad_parameter("step", f"must be between 1 and {range_s} seconds")
    if range_s / step > 11_000:
        raise bad_parameter("step", "too many points; use a larger step")
    return step


def parse_end(text: str | None, now: float) -> float:
    if text is None:
        return now
    try:
        end = float(text)
    except ValueError:
        raise bad_parameter("end", f"{text!r} is not a Unix time in seconds") from None
    if not 0 < end < now + 86400:
        raise bad_parameter("end", "must be a Unix time in seconds, not far in the future")
    return end


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_query(q: SeriesQuery) -> str:
    """One MetricsQL selector for all channels of the request, of the caller's tenant only."""
    names = "|".join(CHANNELS[c].metric for c in q.channels)
    return f'{{__name__=~"{names}",server={_quote(q.server_id)},tenant={_quote(q.tenant)}}}'


_METRIC_TO_CHANNEL = {c.metric: c for c in CHANNELS.values()}


def _numbers(texts: list[str]) -> list[float]:
    """VictoriaMetrics' value strings as numbers. orjson parses them together, in C (float()
    on each took a third of this module's time for a 1 h range); when one is not a JSON number
    (NaN, ±Inf) or the text does not come apart into exactly one number per value, each is
    parsed on its own."""
    try:
        numbers = orjson.loads("[" + ",".join(texts) + "]")
    except orjson.JSONDecodeError:
        numbers = None
    if numbers is None or len(numbers) != len(texts) \
            or not all(type(n) is float or type(n) is int for n in numbers):
        return [float(t) for t in texts]
    return numbers  # type: ignore[no-any-return]


def reshape(q: SeriesQuery, body: bytes) -> dict[str, Any]:
    """VictoriaMetrics' matrix JSON as per-series columns (timestamps, values)."""
    result = orjson.loads(body)["data"]["result"]
    series: list[dict[str, Any]] = []
    for item in result:
        labels = dict(item["metric"])
        channel = _METRIC_TO_CHANNEL.get(labels.pop("__name__", ""))
        if channel is None:
            continue
        labels.pop("server", None)
        labels.pop("tenant", None)
        points = item["values"]
        series.append({"channel": channel.name, "labels": labels, "unit": channel.unit,
                       "timestamps": [p[0] for p in points],
                       "values": _numbers([p[1] for p in points])})
    series.sort(key=lambda s: (q.channels.index(s["channel"]), sorted(s["labels"].items())))
    return {"server_id": q.server_id, "range": f"{q.range_s}s", "step_s": q.step_s,
            "start": q.start, "end": q.end, "series": series}
