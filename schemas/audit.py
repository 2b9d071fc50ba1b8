"""Audit events (``fd.audit``) and the hash chain that makes the stored log tamper-evident.

Every mutation (commands, approvals, acknowledgements, silences, rule changes, logins, token
changes) is an :class:`AuditEvent`. ``streams/audit`` appends each one to the SQL store as record
number ``seq`` with ``hash = sha256(prev_hash || canonical JSON of the event)``; editing any
stored record, or deleting one, breaks the chain from that record on (:func:`verify_chain`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.commands import ApprovalStep
from schemas.envelope import SCHEMA_VERSION, TenantId, UtcDatetime, new_id, utcnow

#: prev_hash of the first record
GENESIS = "0" * 64


class AuditEvent(BaseModel):
    """One mutation: who did what to which target, why, and what it looked like before/after."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    schema_version: int = SCHEMA_VERSION
    id: str = Field(default_factory=new_id, max_length=64, description="Unique event id")
    ts: UtcDatetime = Field(default_factory=utcnow)
    tenant: TenantId
    actor: str = Field(min_length=1, max_length=128, description="User, token or component")
    action: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$",
                        description="What was done, e.g. command.create, alert.ack")
    target: str = Field(max_length=256, description="What it was done to, e.g. command:<id>")
    reason: str = Field("", max_length=2000)
    approvals: tuple[ApprovalStep, ...] = ()
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    outcome: str = Field("ok", max_length=64, description="ok, denied, failed, ...")


def canonical(event: AuditEvent) -> str:
    """The exact text that is hashed and stored (sorted keys, no spaces, UTF-8)."""
    return json.dumps(event.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def chain_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class StoredAudit:
    """One stored record as read back for verification."""

    seq: int
    prev_hash: str
    hash: str
    body: str
    event_id: str
    #: copies of body fields kept in their own columns for filtering (name -> stored text)
    columns: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    event_id: str
    problem: str


def verify_chain(records: Iterable[StoredAudit], *, start_seq: int = 1,
                 start_hash: str = GENESIS) -> list[ChainProblem]:
    """Every break in the chain, in order: a missing sequence number (a deleted record), a
    prev_hash that is not the previous record's hash, or a hash that does not match the body
    (an edited record). An empty list means the chain is whole."""
    problems: list[ChainProblem] = []
    expected_seq, prev = start_seq, start_hash
    for rec in records:
        if rec.seq != expected_seq:
            problems.append(ChainProblem(rec.seq, rec.event_id,
                                         f"records {expected_seq}..{rec.seq - 1} are missing"))
        elif rec.prev_hash != prev:
            problems.append(ChainProblem(rec.seq, rec.event_id,
                                         "prev_hash does not match the previous record"))
        if chain_hash(rec.prev_hash, rec.body) != rec.hash:
            problems.append(ChainProblem(rec.seq, rec.event_id,
                                         "the record was changed after it was written"))
        else:
            problems.extend(_check_columns(rec))
        expected_seq, prev = rec.seq + 1, rec.hash
    return problems


def _check_columns(rec: StoredAudit) -> list[ChainProblem]:
    """The filter columns must still say what the hashed body says."""
    try:
        data = AuditEvent.model_validate_json(rec.body).model_dump(mode="json")
    except ValueError as exc:
        return [ChainProblem(rec.seq, rec.event_id, f"unreadable body: {exc}")]
    found = [name for name, value in rec.columns if str(data.get(name)) != value]
    if rec.event_id != data["id"]:
        found.insert(0, "id")
    return [ChainProblem(rec.seq, rec.event_id, f"column {name} was changed after it was written")
            for name in found]
