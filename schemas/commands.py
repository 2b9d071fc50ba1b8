"""Commands to agents (``fd.commands``) and what agents report about them (``fd.command-events``).

Every command type is one parameter model with a literal ``type``; :data:`COMMAND_TYPES` is the
explicit registry and :data:`CommandParams` the discriminated union built from it. Later ops
modules (FILE_*, CRON_*, FIREWALL_*, SECURITY_SCAN_BASELINE, BACKUP_*, PLUGIN_*) add a model
here and a handler in ``agent/ops``.

On the wire a command travels as a :class:`SignedCommand`: the exact JSON text of the
:class:`Command` and an Ed25519 signature over those bytes, so nothing has to be re-serialised
identically to verify it. The agent checks the signature, the expiry, that the command is bound
to its own tenant and server, and that it has not seen the id before; only then does it ACK.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from schemas.cron import CronCreateParams, CronDeleteParams, CronListParams, CronUpdateParams
from schemas.envelope import SCHEMA_VERSION, Envelope, ServerId, TenantId, UtcDatetime, new_id
from schemas.files import (
    FileDeleteParams,
    FileListParams,
    FileMoveParams,
    FileReadParams,
    FileRestoreParams,
    FileUploadChunkParams,
    FileWriteParams,
)

#: Largest result carried inside a command event; anything bigger is stored by reference.
MAX_INLINE_RESULT_BYTES = 16 * 1024
#: Longest time a command may wait for its agent before it expires, and its default.
MAX_TTL_S = 24 * 3600.0
DEFAULT_TTL_S = 60.0

Actor = Annotated[str, Field(min_length=1, max_length=128, description="Who acted (user name)")]
Reason = Annotated[str, Field(min_length=3, max_length=2000,
                              description="Why: required for every command")]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PingParams(_Params):
    """Checks that the agent is there and answering; the result echoes ``payload``."""

    type: Literal["PING"] = "PING"
    payload: str = Field("", max_length=256, description="Text echoed back in the result")
    delay_ms: int = Field(0, ge=0, le=600_000,
                          description="Milliseconds to wait before answering (tests timeouts)")


#: Every command's parameters, discriminated by ``type``: add a model to this union (and its
#: handler in agent/ops) for each new command type.
AnyParams = (PingParams | CronListParams | CronCreateParams | CronUpdateParams | CronDeleteParams
             | FileListParams | FileReadParams | FileWriteParams | FileUploadChunkParams
             | FileMoveParams | FileDeleteParams | FileRestoreParams)
CommandParams = Annotated[AnyParams, Field(discriminator="type")]
params_adapter: TypeAdapter[AnyParams] = TypeAdapter(CommandParams)

#: type name -> parameter model, read off the union (the registry agents and the API check)
COMMAND_TYPES: dict[str, type[BaseModel]] = {
    model.model_fields["type"].default: model
    for model in (get_args(AnyParams) or (AnyParams,))
}


class CommandStatus(StrEnum):
    PENDING_APPROVAL = "pending-approval"
    QUEUED = "queued"  # signed and produced to fd.commands
    ACKED = "acked"  # the agent verified it and will run it
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"  # refused by the agent (bad signature, expiry, replay...) or approver
    EXPIRED = "expired"  # never ACKed before its expiry
    TIMED_OUT = "timed-out"  # ACKed, but no result within its timeout


FINAL_STATUSES = frozenset({CommandStatus.SUCCEEDED, CommandStatus.FAILED, CommandStatus.REJECTED,
                            CommandStatus.EXPIRED, CommandStatus.TIMED_OUT})


class ApprovalStep(BaseModel):
    """One decision on a command that needs approval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: Actor
    decision: Literal["approved", "rejected"]
    comment: str = Field(min_length=1, max_length=2000)
    at: UtcDatetime


class Command(BaseModel):
    """The signed part of a command: everything the agent needs to decide and to run it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    schema_version: int = Field(SCHEMA_VERSION, description="Wire format major version")
    id: str = Field(default_factory=new_id, pattern=r"^[0-9a-f]{32}$", description="Command id")
    tenant: TenantId
    server_id: ServerId
    type: str = Field(description="The command type (same as params.type)")
    params: CommandParams
    actor: Actor
    reason: Reason
    issued_at: UtcDatetime
    expires_at: UtcDatetime = Field(description="The agent refuses the command after this")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="Longest run before timed-out")
    approvals: tuple[ApprovalStep, ...] = Field((), max_length=16,
                                                description="Approval trace, oldest first")

    @model_validator(mode="after")
    def _consistent(self) -> Command:
        if self.type != self.params.type:
            raise ValueError(f"type {self.type!r} does not match params.type "
                             f"{self.params.type!r}")
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must come after issued_at")
        if self.expires_at - self.issued_at > timedelta(seconds=MAX_TTL_S):
            raise ValueError(f"a command may live at most {MAX_TTL_S:.0f} s")
        return self


def policy_types(command: Command) -> tuple[str, ...]:
    """The command types whose approval policy applies to ``command``: its own type, and the
    type of anything else it does (a FILE_MOVE that may overwrite also deletes what it
    replaces, and so does a FILE_RESTORE that may overwrite: a tenant that wants deletes
    approved gets those approved too)."""
    params = command.params
    if isinstance(params, FileMoveParams | FileRestoreParams) and params.overwrite:
        return command.type, "FILE_DELETE"
    return (command.type,)


class SignedCommand(BaseModel):
    """What ``fd.commands`` carries: the command's JSON text and the signature over its bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    key_id: str = Field(max_length=64, description="Which control-plane key signed it")
    command: str = Field(max_length=256 * 1024, description="The Command, as signed JSON text")
    signature: str = Field(max_length=128, description="Ed25519 signature, base64")

    @classmethod
    def sign(cls, command: Command, key: Ed25519PrivateKey, key_id: str) -> SignedCommand:
        text = command.model_dump_json()
        signature = base64.b64encode(key.sign(text.encode())).decode()
        return cls(key_id=key_id, command=text, signature=signature)

    def verified(self, key: Ed25519PublicKey) -> Command:
        """The command, if ``key`` signed exactly this text; ValueError says why not."""
        try:
            key.verify(base64.b64decode(self.signature, validate=True), self.command.encode())
        except (InvalidSignature, binascii.Error, ValueError) as exc:
            raise ValueError("bad signature") from exc
        return Command.model_validate_json(self.command)


class EventKind(StrEnum):
    """What an agent reports; each maps onto a command status."""

    ACKED = "acked"
    RUNNING = "running"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    TIMED_OUT = "timed-out"


class CommandEvent(Envelope):
    """An agent's report on one command (``fd.command-events``, key = server id)."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    command_id: str = Field(max_length=64)
    kind: EventKind
    message: str = Field("", max_length=2000, description="Human-readable detail or reason")
    progress: float | None = Field(None, ge=0, le=1, description="Fraction done (progress)")
    result: dict[str, Any] | None = Field(None, description="The handler's result, when small")
    result_ref: str | None = Field(None, max_length=512,
                                   description="Where a result too large to inline is stored")
    agent_seq: int = Field(0, ge=0, description="Order of this agent's reports on the command")


class CommandRecord(BaseModel):
    """The control plane's view of a command: what the API returns and the store keeps."""

    model_config = ConfigDict(extra="forbid")

    command: Command
    status: CommandStatus
    requires_approval: bool = False
    created_at: UtcDatetime
    updated_at: UtcDatetime
    acked_at: datetime | None = None
    finished_at: datetime | None = None
    message: str = ""
    progress: float | None = None
    result: dict[str, Any] | None = None
    result_ref: str | None = None
    ttl_s: float = Field(DEFAULT_TTL_S, gt=0, le=MAX_TTL_S,
                         description="How long the signed command stays valid once dispatched")
    history: list[dict[str, Any]] = Field(default_factory=list, max_length=64,
                                          description="Status transitions, oldest first")

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def summary(self) -> dict[str, Any]:
        """What the live commands stream carries for each change."""
        return {"id": self.command.id, "server_id": self.command.server_id,
                "tenant": self.command.tenant, "type": self.command.type,
                "status": str(self.status), "message": self.message, "progress": self.progress,
                "actor": self.command.actor, "updated_at": self.updated_at.isoformat()}

    def moved(self, status: CommandStatus, at: datetime, message: str, *, by: str = "agent",
              **fields: Any) -> CommandRecord:
        """A copy in ``status``, with the transition added to the history."""
        step = {"status": str(status), "at": at.isoformat(), "message": message[:500], "by": by}
        history = [*self.history, step][-64:]
        return self.model_copy(update={"status": status, "updated_at": at, "message": message,
                                       "history": history, **fields})
