"""Agent enrollment: one-time enrollment tokens, the enrollment itself, the server registry.

An admin makes a token (``POST /api/v1/enrollment-tokens``, or ``fleetdeck enroll create``);
the agent sends it once to ``POST /api/v1/agents/enroll`` with what it is (host name, agent
version, OS, the command types it handles) and gets its server id, its tenant and the control
plane's Ed25519 public key to pin. That route takes no session or bearer token: the enrollment
token in the body is the credential, and it is never logged (only its id is).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from connectors.sql import Enrolled, Server, SQLStore
from schemas.audit import AuditEvent
from schemas.envelope import ServerId, utcnow
from schemas.identity import Role
from ui import bus
from ui.alerts_api import _Body, _json, _parse
from ui.api import ORJSONResponse
from ui.auth import require
from ui.enrollment import (
    DEFAULT_TTL,
    MAX_TOKEN_CHARS,
    MAX_TTL,
    default_server_id,
    new_enrollment,
    split_enrollment,
)
from ui.errors import APIError

log = logging.getLogger(__name__)

HOSTNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$"
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Capability = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
BAD_TOKEN = ("the enrollment token is not valid (unknown, used or expired); ask an admin of "
             "the tenant for a new one")


class EnrollmentTokenBody(_Body):
    ttl_s: float = Field(DEFAULT_TTL.total_seconds(), ge=60, le=MAX_TTL.total_seconds(),
                         description="Seconds until it expires (default 1 hour, at most 7 days)")
    note: str = Field("", max_length=500, description="What it is for (kept in the audit log)")


class EnrollBody(_Body):
    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS, description="fde_…")
    server_id: ServerId | None = Field(None, description="Default: from the host name")
    hostname: str = Field(pattern=HOSTNAME_PATTERN, max_length=255)
    agent_version: str = Field(pattern=PRINTABLE, max_length=64)
    os: str = Field(pattern=PRINTABLE, max_length=128)
    capabilities: list[Capability] = Field(default_factory=list, max_length=128,
                                           description="Command types the agent handles")


def _sql(request: Request) -> SQLStore:
    return request.app.state.sql  # type: ignore[no-any-return]


async def create_enrollment_token(request: Request) -> Response:
    """
    summary: Make a one-time enrollment token for your tenant (admin); its text is shown only
      here.
    requestBody:
      content:
        application/json:
          schema: {type: object, properties: {ttl_s: {type: number}, note: {type: string}}}
    responses:
      201: {description: "{token: 'fde_…', id, tenant, expires_at}"}
      400: {description: "bad field, named"}
      403: {description: not an admin}
    """
    principal = await require(request, Role.ADMIN)
    body: EnrollmentTokenBody = _parse(EnrollmentTokenBody, await _json(request))
    text, record = new_enrollment(principal.tenant, principal.name,
                                  timedelta(seconds=body.ttl_s))
    await _sql(request).create_enrollment(record)
    await bus.audit(request, AuditEvent(
        tenant=principal.tenant, actor=principal.name, action="enrollment.create",
        target=f"enrollment:{record.id}", reason=body.note,
        after={"expires_at": record.expires_at.isoformat()}))
    return ORJSONResponse({"token": text, "id": record.id, "tenant": record.tenant,
                           "expires_at": record.expires_at.isoformat()}, status_code=201)


async def enroll(request: Request) -> Response:
    """
    summary: Enroll an agent with a one-time enrollment token (no session or bearer token).
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [token, hostname, agent_version, os], properties: {
            token: {type: string}, server_id: {type: string}, hostname: {type: string},
            agent_version: {type: string}, os: {type: string},
            capabilities: {type: array, items: {type: string}}}}
    responses:
      200: {description: "{server_id, tenant, control_key_pem, key_id}"}
      400: {description: "bad field, named"}
      401: {description: "the token is unknown, used or expired"}
      409: {description: the server id is enrolled in another tenant}
    """
    body: EnrollBody = _parse(EnrollBody, await _json(request))
    server = _server(body)
    parts = split_enrollment(body.token)
    done = Enrolled(None) if parts is None else await _sql(request).enroll_server(
        parts[0], parts[1], server, server.enrolled_at)
    if done.tenant is None:
        log.warning("enrollment of %s refused: bad token (id %r)", server.id,
                    None if parts is None else parts[0])
        raise APIError(401, "unauthenticated", BAD_TOKEN)
    await bus.audit(request, _audit(server, done))
    if done.conflict:
        raise APIError(409, "conflict", f"server {server.id!r} is enrolled in another tenant; "
                       "choose another server_id")
    signing = request.app.state.signing
    log.info("agent %s enrolled in %s", server.id, done.tenant)
    return ORJSONResponse({"server_id": server.id, "tenant": done.tenant,
                           "control_key_pem": signing.public_pem(), "key_id": signing.key_id})


def _server(body: EnrollBody) -> Server:
    server_id = body.server_id or default_server_id(body.hostname)
    if server_id is None:
        raise APIError(400, "bad_request", "field 'server_id': the host name gives no usable "
                       "server id; send one")
    now = utcnow()
    return Server(id=server_id, tenant="", hostname=body.hostname,
                  agent_version=body.agent_version, os=body.os,
                  capabilities=tuple(sorted(set(body.capabilities))), enrolled_at=now,
                  last_seen_at=now)


def _audit(server: Server, done: Enrolled) -> AuditEvent:
    assert done.tenant is not None
    return AuditEvent(tenant=done.tenant, actor=f"agent:{server.id}", action="agent.enroll",
                      target=f"server:{server.id}",
                      outcome="denied" if done.conflict else "ok",
                      reason="the server id is enrolled in another tenant" if done.conflict
                      else "", after=None if done.conflict else _server_json(server))


def _server_json(server: Server) -> dict[str, Any]:
    return {"server_id": server.id, "hostname": server.hostname,
            "agent_version": server.agent_version, "os": server.os,
            "capabilities": list(server.capabilities),
            "enrolled_at": server.enrolled_at.isoformat(),
            "last_seen_at": None if server.last_seen_at is None
            else server.last_seen_at.isoformat()}


async def list_agents(request: Request) -> Response:
    """
    summary: The enrolled servers of your tenant, with agent version, OS and capabilities.
    responses:
      200: {description: "{agents: [{server_id, hostname, agent_version, os, capabilities,
        enrolled_at, last_seen_at}]}"}
      401: {description: not signed in}
    """
    principal = await require(request, Role.VIEWER)
    servers = await _sql(request).list_servers(principal.tenant)
    return ORJSONResponse({"agents": [_server_json(s) for s in servers]})
