"""Decoding of raw messages: a valid sample, or a dead letter with a reason."""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from schemas import SCHEMA_VERSION, DeadLetter, MetricSample


def decode_sample(raw: bytes | None, *, topic: str, key: bytes | None,
                  max_bytes: int) -> MetricSample | DeadLetter:
    """Parse ``raw`` as a MetricSample; anything wrong becomes a DeadLetter naming why."""
    raw = raw or b""
    size = len(raw)

    def dead(reason: str, detail: str) -> DeadLetter:
        return DeadLetter(source_topic=topic, reason=reason, detail=detail[:4000],
                          key=key.decode("utf-8", "replace")[:256] if key else None, size=size,
                          payload_preview=raw[:512].decode("utf-8", "replace"))

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
