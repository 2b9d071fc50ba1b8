"""Decoding of raw messages: a valid sample, or a dead letter with a reason."""

from __future__ import annotations

import time

import orjson
from pydantic import ValidationError

from schemas import SCHEMA_VERSION, DeadLetter, MetricSample

#: how far ahead of the worker's clock a sample may be stamped (agents' clocks drift)
MAX_FUTURE_S = 300.0


def decode_sample(raw: bytes | None, *, topic: str, key: bytes | None, max_bytes: int,
                  now: float | None = None) -> MetricSample | DeadLetter:
    """Parse ``raw`` as a MetricSample; anything wrong becomes a DeadLetter naming why."""
    sample = _parse(raw, topic=topic, key=key, max_bytes=max_bytes)
    if isinstance(sample, MetricSample):
        limit = (time.time() if now is None else now) + MAX_FUTURE_S
        if sample.ts.timestamp() > limit:
            return dead_letter(raw or b"", topic, key, "invalid",
                         f"ts: {sample.ts.isoformat()} is more than {MAX_FUTURE_S:.0f} s "
                         "in the future (agent clock wrong?)")
    return sample


def dead_letter(raw: bytes, topic: str, key: bytes | None, reason: str, detail: str) -> DeadLetter:
    return DeadLetter(source_topic=topic, reason=reason, detail=detail[:4000],
                      key=key.decode("utf-8", "replace")[:256] if key else None, size=len(raw),
                      payload_preview=raw[:512].decode("utf-8", "replace"))


def _parse(raw: bytes | None, *, topic: str, key: bytes | None,
           max_bytes: int) -> MetricSample | DeadLetter:
    raw = raw or b""
    size = len(raw)

    def dead(reason: str, detail: str) -> DeadLetter:
        return dead_letter(raw, topic, key, reason, detail)

    if size > max_bytes:
        return dead("oversized", f"{size} bytes > limit {max_bytes}")
    try:  # fast path: a valid sample of this version
        sample = MetricSample.model_validate_json(raw)
        if sample.schema_version == SCHEMA_VERSION:
            return sample
    except ValidationError:
        pass  # find out why, below
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return dead("undecodable", f"not JSON: {exc}")
    if not isinstance(data, dict):
        return dead("undecodable", f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        return dead("wrong_version", f"schema_version {version!r}, expected {SCHEMA_VERSION}")
    try:
        return MetricSample.model_validate(data)
    except ValidationError as exc:
        return dead("invalid", _first_errors(exc))


def _first_errors(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(message)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
