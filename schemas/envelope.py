"""The fields every FleetDeck message carries (see DESIGN.md, "Wire contracts")."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

#: Major version of the wire format. A message with another major version is dead-lettered.
SCHEMA_VERSION = 1

#: server and tenant ids: letters, digits and . _ : -, at most 128 characters
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone (UTC)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
ServerId = Annotated[str, Field(pattern=ID_PATTERN, description="Stable id of a server")]
TenantId = Annotated[str, Field(pattern=ID_PATTERN, description="Tenant that owns the server")]


#: Unicode categories refused in audit text: controls, invisible format characters (bidi
#: overrides, zero-width spaces) and the line and paragraph separators.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _printable(text: str) -> str:
    bad = sorted({f"U+{ord(c):04X}" for c in text
                  if c not in "\t\n" and unicodedata.category(c) in _HIDDEN})
    if bad:
        raise ValueError("control characters are not allowed (" + ", ".join(bad[:5]) + "): "
                         "they can hide or reorder what an audit reader sees")
    return text


#: Free text people write into the audit trail (reasons, comments): tabs and line breaks
#: allowed, no other control characters (NUL, escape sequences that rewrite a terminal, bidi
#: overrides and zero-width characters that make a record read otherwise than it is).
AuditText = Annotated[str, AfterValidator(_printable)]


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Base of every message: schema version, id, UTC timestamp, tenant and server."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    schema_version: int = Field(SCHEMA_VERSION, description="Wire format major version")
    id: str = Field(default_factory=new_id, max_length=64, description="Unique message id")
    ts: UtcDatetime = Field(default_factory=utcnow, description="When the message was made (UTC)")
    tenant: TenantId = "default"
    server_id: ServerId
