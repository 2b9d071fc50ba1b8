"""Commands API: send a typed command to one server, follow it, approve or reject it.

``POST /api/v1/commands`` validates the parameters against the command's model (unknown fields
refused), checks that the caller may send commands to that server (same tenant, operator or
better), records the command and an audit event, and, unless the tenant's policy wants an
approval first, signs the envelope and produces it to ``fd.commands`` keyed by server id.
From there the agent's reports move the record (``streams/commands``).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import orjson
from pydantic import Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from connectors.redis_live import LiveEvent, LiveStreamError, StreamEntry
from connectors.sql import SQLStore
from schemas.audit import AuditEvent
from schemas.commands import (
    COMMAND_TYPES,
    DEFAULT_TTL_S,
    MAX_TTL_S,
    ApprovalStep,
    Command,
    CommandRecord,
    CommandStatus,
    SignedCommand,
    policy_types,
)
from schemas.envelope import AuditText, ServerId, utcnow
from schemas.identity import Role
from schemas.topics import COMMANDS
from ui import bus
from ui.alerts_api import _Body, _field_error, _json, _parse
from ui.api import ORJSONResponse, server_id_param, sse_response
from ui.auth import Principal, require
from ui.errors import APIError, bad_parameter

log = logging.getLogger(__name__)

#: a command body may carry a FILE_WRITE or FILE_UPLOAD_CHUNK of 128 KiB as base64, with room
#: to spare (a signed command is at most 256 KiB)
MAX_COMMAND_BODY = 200 * 1024

COMMAND_ID_CHARS = frozenset("0123456789abcdef")


class CommandBody(_Body):
    server_id: ServerId
    type: str = Field(description="Command type, e.g. PING")
    params: dict[str, Any] = Field(default_factory=dict, description="The type's parameters")
    reason: AuditText = Field(min_length=3, max_length=2000,
                              description="Why (required, audited)")
    ttl_s: float = Field(DEFAULT_TTL_S, ge=1, le=MAX_TTL_S, strict=True,
                         description="The agent refuses the command after this long")
    timeout_s: float = Field(30.0, gt=0, le=3600, strict=True,
                             description="Longest run before timed-out")


class DecisionBody(_Body):
    comment: AuditText = Field(min_length=1, max_length=2000,
                               description="Why (required, audited)")


def _sql(request: Request) -> SQLStore:
    return request.app.state.sql  # type: ignore[no-any-return]


async def server_tenant(request: Request, server_id: str) -> str | None:
    """The tenant a server belongs to: its enrollment, else what its samples say."""
    server = await _sql(request).get_server(server_id)
    if server is not None:
        return server.tenant
    raw = await request.app.state.live.summary(server_id)
    return None if raw is None else str(orjson.loads(raw).get("tenant", "default"))


def _command(body: CommandBody, principal: Principal) -> Command:
    if body.type not in COMMAND_TYPES:
        raise bad_parameter("type", f"unknown command type {body.type[:40]!r}; known: "
                            f"{', '.join(sorted(COMMAND_TYPES))}")
    if "type" in body.params and body.params["type"] != body.type:
        raise bad_parameter("params.type", "leave it out, or give the command's own type")
    now = utcnow()
    try:
        return Command(tenant=principal.tenant, server_id=body.server_id, type=body.type,
                       params={**body.params, "type": body.type}, actor=principal.name,
                       reason=body.reason, issued_at=now,
                       expires_at=now + timedelta(seconds=body.ttl_s), timeout_s=body.timeout_s)
    except ValidationError as exc:
        raise _field_error(exc) from None


def record_json(record: CommandRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


async def _dispatch(request: Request, record: CommandRecord) -> None:
    """Sign the command and hand it to the event log, keyed by server id."""
    key = request.app.state.signing
    signed = SignedCommand.sign(record.command, key.private, key.key_id)
    await bus.send(request, COMMANDS, record.command.server_id, signed.model_dump_json().encode())
    await _live_change(request, record)


async def _live_change(request: Request, record: CommandRecord) -> None:
    live = request.app.state.live
    try:
        await live.publish([LiveEvent(live.keys.commands_stream, "command",
                                      json.dumps(record.summary()), 20_000)])
    except LiveStreamError as exc:
        log.warning("cannot publish a command change: %s", exc)


def _audit(principal: Principal, action: str, record: CommandRecord, reason: str,
           before: dict[str, Any] | None = None) -> AuditEvent:
    cmd = record.command
    return AuditEvent(tenant=cmd.tenant, actor=principal.name, action=action,
                      target=f"command:{cmd.id}", reason=reason, approvals=cmd.approvals,
                      before=before,
                      after={"status": str(record.status), "server_id": cmd.server_id,
                             "type": cmd.type, "params": cmd.params.model_dump(mode="json")})


async def create_command(request: Request) -> Response:
    """
    summary: Send a command to one server (operator role; reason required).
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [server_id, type, reason], properties: {
            server_id: {type: string}, type: {type: string, enum: [COMMAND_TYPES]},
            params: {type: object}, reason: {type: string}, ttl_s: {type: number},
            timeout_s: {type: number}}}
    responses:
      202: {description: "{command: {...}}: queued, or pending-approval"}
      400: {description: "bad field, named"}
      401: {description: not signed in}
      403: {description: role too low}
      404: {description: no such server in your tenant}
      503: {description: the event log or SQL store is unavailable}
    """
    principal = await require(request, Role.OPERATOR)
    body: CommandBody = _parse(CommandBody, await _json(request, MAX_COMMAND_BODY))
    if await server_tenant(request, body.server_id) != principal.tenant:
        raise APIError(404, "not_found", f"no server {body.server_id!r} in tenant "
                       f"{principal.tenant!r}")
    sql = _sql(request)
    command = _command(body, principal)
    approval_needed = False
    for kind in policy_types(command):
        approval_needed = approval_needed or await sql.requires_approval(principal.tenant, kind)
    if approval_needed:  # waiting for an approver may take a day; the agent's window starts
        command = command.model_copy(  # when it is approved
            update={"expires_at": command.issued_at + timedelta(seconds=MAX_TTL_S)})
    now = utcnow()
    record = CommandRecord(
        command=command, created_at=now, updated_at=now, requires_approval=approval_needed,
        ttl_s=body.ttl_s, status=CommandStatus.QUEUED, history=[])
    record = record.moved(CommandStatus.PENDING_APPROVAL if approval_needed
                          else CommandStatus.QUEUED, now,
                          "waiting for an approver" if approval_needed else "sent to the agent",
                          by=principal.name)
    await sql.create_command(record)
    await bus.audit(request, _audit(principal, "command.create", record, body.reason))
    if approval_needed:
        await _live_change(request, record)
    else:
        await _dispatch(request, record)
    log.info("command %s %s to %s by %s: %s", command.id, command.type, command.server_id,
             principal.name, record.status)
    return ORJSONResponse({"command": record_json(record)}, status_code=202)


# The OpenAPI document lists every registered command type (the registry is the truth).
create_command.__doc__ = (create_command.__doc__ or "").replace(
    "[COMMAND_TYPES]", "[" + ", ".join(sorted(COMMAND_TYPES)) + "]")


async def _own(request: Request, principal: Principal) -> CommandRecord:
    command_id = request.path_params["id"]
    if len(command_id) != 32 or not set(command_id) <= COMMAND_ID_CHARS:
        raise bad_parameter("id", "not a command id (32 hex digits)")
    record = await _sql(request).get_command(command_id, tenant=principal.tenant)
    if record is None:
        raise APIError(404, "not_found", f"no command {command_id} in tenant "
                       f"{principal.tenant!r}")
    return record


async def get_command(request: Request) -> Response:
    """
    summary: One command with its status, history, approval trace and result.
    responses:
      200: {description: "{command: {...}}"}
      404: {description: no such command in your tenant}
    """
    principal = await require(request, Role.VIEWER)
    return ORJSONResponse({"command": record_json(await _own(request, principal))})


async def list_commands(request: Request) -> Response:
    """
    summary: Commands of your tenant, newest first.
    parameters:
      - {name: server, in: query, schema: {type: string}}
      - {name: status, in: query, description: comma list of statuses, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 500}}
    responses:
      200: {description: "{commands: [...]}"}
      400: {description: bad parameter}
    """
    principal = await require(request, Role.VIEWER)
    params = request.query_params
    server = params.get("server")
    if server is not None:
        server_id_param(server, "server")
    statuses = None
    if params.get("status"):
        statuses = [s.strip() for s in params["status"].split(",") if s.strip()]
        unknown = [s for s in statuses if s not in CommandStatus.__members__.values()]
        if unknown:
            raise bad_parameter("status", f"unknown status(es) {', '.join(unknown)[:200]}; "
                                f"known: {', '.join(CommandStatus)}")
    try:
        limit = int(params.get("limit", "100"))
    except ValueError:
        raise bad_parameter("limit", "must be a whole number") from None
    if not 1 <= limit <= 500:
        raise bad_parameter("limit", "must be between 1 and 500")
    records = await _sql(request).list_commands(principal.tenant, server_id=server,
                                                statuses=statuses, limit=limit)
    return ORJSONResponse({"commands": [record_json(r) for r in records]})


async def approve(request: Request) -> Response:
    """
    summary: Approve a command waiting for approval (approver role; not its requester).
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [comment], properties: {comment: {type: string}}}
    responses:
      202: {description: "{command: {...}}: approved and sent to the agent"}
      403: {description: "the requester cannot approve their own command, or role too low"}
      409: {description: the command is not waiting for approval}
    """
    return await _decide(request, "approved")


async def reject(request: Request) -> Response:
    """
    summary: Reject a command waiting for approval (approver role; not its requester).
    responses:
      200: {description: "{command: {...}}: rejected"}
      403: {description: "the requester cannot decide on their own command, or role too low"}
      409: {description: the command is not waiting for approval}
    """
    return await _decide(request, "rejected")


async def _decide(request: Request, decision: str) -> Response:
    principal = await require(request, Role.APPROVER)
    body: DecisionBody = _parse(DecisionBody, await _json(request))
    record = await _own(request, principal)
    if record.status != CommandStatus.PENDING_APPROVAL:
        raise APIError(409, "conflict", f"the command is {record.status}, not waiting for "
                       "approval")
    if principal.name == record.command.actor:
        raise APIError(403, "forbidden", "the requester cannot approve or reject their own "
                       "command; another approver must")
    now = utcnow()
    step = ApprovalStep(actor=principal.name, decision=decision,  # type: ignore[arg-type]
                        comment=body.comment, at=now)
    approvals = (*record.command.approvals, step)
    if decision == "approved":
        command = record.command.model_copy(update={
            "approvals": approvals, "issued_at": now,
            "expires_at": now + timedelta(seconds=record.ttl_s)})
        updated = record.moved(CommandStatus.QUEUED, now, f"approved by {principal.name}",
                               by=principal.name, command=command)
    else:
        command = record.command.model_copy(update={"approvals": approvals})
        updated = record.moved(CommandStatus.REJECTED, now,
                               f"rejected by {principal.name}: {body.comment}",
                               by=principal.name, command=command, finished_at=now)
    if not await _sql(request).update_command(updated, expect_status=str(record.status)):
        raise APIError(409, "conflict", "the command changed meanwhile; reload it")
    action = "command.approve" if decision == "approved" else "command.reject"
    await bus.audit(request, _audit(principal, action, updated, body.comment,
                                    before={"status": str(record.status)}))
    if decision == "approved":
        await _dispatch(request, updated)
    else:
        await _live_change(request, updated)
    return ORJSONResponse({"command": record_json(updated)},
                          status_code=202 if decision == "approved" else 200)


async def commands_stream(request: Request) -> Response:
    """
    summary: SSE of command status changes in your tenant (optionally one server's).
    parameters:
      - {name: server, in: query, schema: {type: string}}
    responses:
      200: {description: "text/event-stream of `command` events"}
    """
    principal = await require(request, Role.VIEWER)
    server = request.query_params.get("server")
    if server is not None:
        server_id_param(server, "server")

    def keep(entry: StreamEntry) -> bool:
        try:
            data = orjson.loads(entry.data)
        except orjson.JSONDecodeError:
            return False
        return bool(data.get("tenant") == principal.tenant
                    and (server is None or data.get("server_id") == server))

    return await sse_response(request, request.app.state.live.keys.commands_stream, keep)
