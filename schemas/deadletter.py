"""Messages that could not be processed, on ``fd.dead-letter``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import UtcDatetime, new_id, utcnow


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["dead_letter"] = "dead_letter"
    schema_version: int = 1
    id: str = Field(default_factory=new_id)
    ts: UtcDatetime = Field(default_factory=utcnow)
    source_topic: str
    reason: str = Field(description="undecodable, oversized, wrong_version or invalid")
    detail: str = Field(max_length=4000, description="Human readable detail")
    key: str | None = None
    size: int = Field(ge=0, description="Size of the original payload (bytes)")
    payload_preview: str = Field(max_length=2048, description="Start of the original payload")
