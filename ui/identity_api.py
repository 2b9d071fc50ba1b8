"""Signing in and out, API tokens and approval policies.

Sign-in is ``POST /api/v1/session`` with JSON (the login page's script sends it): the session
cookie is HttpOnly and SameSite=Strict, Secure when the UI is served over HTTPS, and the
session lives in the SQL store, so signing out (or revoking) ends it everywhere. Repeated
failures for one user name are refused for a while.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from datetime import timedelta

from pydantic import Field, StrictBool
from starlette.requests import Request
from starlette.responses import Response

from connectors.sql import Session
from schemas.audit import AuditEvent
from schemas.commands import COMMAND_TYPES
from schemas.envelope import ID_PATTERN, AuditText, utcnow
from schemas.identity import Role
from ui import bus
from ui.alerts_api import _Body, _json, _parse
from ui.api import ORJSONResponse
from ui.auth import SESSION_COOKIE, Principal, authenticate, digest, new_token, password_ok, require
from ui.errors import APIError, bad_parameter

SESSION_TTL = timedelta(hours=12)
MAX_FAILURES = 5
LOCKOUT_S = 60.0


class LoginBody(_Body):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)
    tenant: str | None = Field(None, pattern=ID_PATTERN,
                               description="Which of your tenants (needed if you have several)")


class TokenBody(_Body):
    name: str = Field(min_length=1, max_length=128, description="Who or what acts with it")
    role: Role
    ttl_s: float | None = Field(None, ge=60, le=400 * 86400, description="Expiry (omit: none)")


class PolicyBody(_Body):
    requires_approval: StrictBool
    reason: AuditText = Field(min_length=3, max_length=2000,
                              description="Why the policy changes (required, audited)")


class Failures:
    """Failed sign-ins per user name within the lockout window (in this process)."""

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = defaultdict(list)

    def locked(self, username: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self._times.get(username, []) if now - t < LOCKOUT_S]
        self._times[username] = recent
        return len(recent) >= MAX_FAILURES

    def add(self, username: str) -> None:
        self._times[username].append(time.monotonic())

    def clear(self, username: str) -> None:
        self._times.pop(username, None)


def _principal_json(p: Principal) -> dict[str, str]:
    return {"name": p.name, "tenant": p.tenant, "role": str(p.role), "via": p.via}


async def sign_in(request: Request) -> Response:
    """
    summary: Sign in with user name and password; sets the session cookie.
    responses:
      200: {description: "{me: {name, tenant, role}}"}
      400: {description: several tenants and none chosen}
      401: {description: wrong user name or password}
      429: {description: too many failures; wait a minute}
    """
    body: LoginBody = _parse(LoginBody, await _json(request))
    failures: Failures = request.app.state.login_failures
    if failures.locked(body.username):
        raise APIError(429, "too_many_attempts", "too many failed sign-ins; wait a minute")
    sql = request.app.state.sql
    user = await sql.get_user(body.username)
    if user is None or user.disabled or not password_ok(user.password_hash, body.password):
        failures.add(body.username)
        await _audit_login(request, body.username, body.tenant or "-", "denied")
        raise APIError(401, "unauthenticated", "wrong user name or password")
    tenants = await sql.memberships(body.username)
    if body.tenant is None and len(tenants) == 1:
        body.tenant = next(iter(tenants))
    if body.tenant is None:
        raise bad_parameter("tenant", f"choose one of {', '.join(sorted(tenants)) or 'none'}")
    if body.tenant not in tenants:
        failures.add(body.username)
        raise APIError(401, "unauthenticated", f"{body.username} is not a member of tenant "
                       f"{body.tenant!r}")
    failures.clear(body.username)
    secret, now = secrets.token_urlsafe(32), utcnow()
    session = Session(id=digest(secret), username=body.username, tenant=body.tenant,
                      role=tenants[body.tenant], created_at=now, expires_at=now + SESSION_TTL,
                      revoked_at=None)
    await sql.create_session(session)
    await _audit_login(request, body.username, body.tenant, "ok")
    me = Principal(body.username, body.tenant, Role(session.role), "session", session.id)
    response = ORJSONResponse({"me": _principal_json(me)})
    response.set_cookie(SESSION_COOKIE, secret, max_age=int(SESSION_TTL.total_seconds()),
                        httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/")
    return response


async def _audit_login(request: Request, username: str, tenant: str, outcome: str) -> None:
    if tenant == "-":
        tenants = await request.app.state.sql.memberships(username)
        tenant = next(iter(sorted(tenants)), "default")
    await bus.audit(request, AuditEvent(tenant=tenant, actor=username[:128], action="login",
                                        target=f"user:{username[:120]}", outcome=outcome))


async def sign_out(request: Request) -> Response:
    """
    summary: Sign out, which ends the session everywhere and clears the cookie.
    responses:
      200: {description: signed out}
    """
    principal = await authenticate(request)
    if principal is not None and principal.via == "session":
        await request.app.state.sql.revoke_session(principal.credential_id, utcnow())
        request.app.state.credentials.forget(principal.credential_id)
        await bus.audit(request, AuditEvent(tenant=principal.tenant, actor=principal.name,
                                            action="logout", target=f"user:{principal.name}"))
    response = ORJSONResponse({"signed_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def me(request: Request) -> Response:
    """
    summary: Who you are, in which tenant, with which role.
    responses:
      200: {description: "{me: {name, tenant, role, via}}"}
      401: {description: not signed in}
    """
    return ORJSONResponse({"me": _principal_json(await require(request))})


async def create_token(request: Request) -> Response:
    """
    summary: Make an API token for your tenant (admin); its text is shown only here.
    responses:
      201: {description: "{token: 'fdt_…', id, ...}"}
    """
    principal = await require(request, Role.ADMIN)
    body: TokenBody = _parse(TokenBody, await _json(request))
    text, record = new_token(principal.tenant, body.role, body.name, principal.name,
                             None if body.ttl_s is None else timedelta(seconds=body.ttl_s))
    await request.app.state.sql.create_token(record)
    await bus.audit(request, AuditEvent(
        tenant=principal.tenant, actor=principal.name, action="token.create",
        target=f"token:{record.id}", after={"name": body.name, "role": str(body.role),
                                            "expires_at": _iso(record.expires_at)}))
    return ORJSONResponse({"token": text, **_token_json(record)}, status_code=201)


async def list_tokens(request: Request) -> Response:
    """
    summary: Your tenant's API tokens (admin); never their secrets.
    responses:
      200: {description: "{tokens: [...]}"}
    """
    principal = await require(request, Role.ADMIN)
    tokens = await request.app.state.sql.list_tokens(principal.tenant)
    return ORJSONResponse({"tokens": [_token_json(t) for t in tokens]})


async def revoke_token(request: Request) -> Response:
    """
    summary: Revoke an API token of your tenant (admin).
    responses:
      200: {description: revoked}
      404: {description: no such token in your tenant}
    """
    principal = await require(request, Role.ADMIN)
    token_id = request.path_params["id"]
    if not await request.app.state.sql.revoke_token(token_id[:64], principal.tenant, utcnow()):
        raise APIError(404, "not_found", f"no active token {token_id[:64]!r} in your tenant")
    request.app.state.credentials.forget(token_id[:64])
    await bus.audit(request, AuditEvent(tenant=principal.tenant, actor=principal.name,
                                        action="token.revoke", target=f"token:{token_id[:64]}"))
    return ORJSONResponse({"revoked": token_id})


async def list_policies(request: Request) -> Response:
    """
    summary: Which command types need an approval in your tenant.
    responses:
      200: {description: "{policies: {TYPE: bool}}"}
    """
    principal = await require(request, Role.VIEWER)
    stored = await request.app.state.sql.list_policies(principal.tenant)
    return ORJSONResponse({"policies": {t: bool(stored.get(t, False)) for t in COMMAND_TYPES}})


async def set_policy(request: Request) -> Response:
    """
    summary: Require (or stop requiring) approval for a command type (admin; reason required).
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [requires_approval, reason], properties: {
            requires_approval: {type: boolean}, reason: {type: string, minLength: 3}}}
    responses:
      200: {description: "{type, requires_approval}"}
      400: {description: unknown command type}
    """
    principal = await require(request, Role.ADMIN)
    command_type = request.path_params["type"]
    if command_type not in COMMAND_TYPES:
        raise bad_parameter("type", f"unknown command type {command_type[:40]!r}")
    body: PolicyBody = _parse(PolicyBody, await _json(request))
    sql = request.app.state.sql
    before = await sql.requires_approval(principal.tenant, command_type)
    await sql.set_policy(principal.tenant, command_type, body.requires_approval)
    await bus.audit(request, AuditEvent(
        tenant=principal.tenant, actor=principal.name, action="policy.set",
        target=f"policy:{command_type}", reason=body.reason,
        before={"requires_approval": before},
        after={"requires_approval": body.requires_approval}))
    return ORJSONResponse({"type": command_type, "requires_approval": body.requires_approval})


def _iso(value: object) -> str | None:
    return None if value is None else value.isoformat()  # type: ignore[attr-defined]


def _token_json(t: object) -> dict[str, object]:
    fields = ("id", "name", "role", "created_by", "created_at", "expires_at", "revoked_at",
              "last_used_at")
    out: dict[str, object] = {}
    for name in fields:
        value = getattr(t, name)
        out[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return out
