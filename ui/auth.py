"""Who is asking: API tokens (``Authorization: Bearer fdt_…``) and UI sessions (a cookie).

Secrets are never stored: a token is ``fdt_<id>_<secret>`` and the store keeps the id, the
SHA-256 of the secret, the tenant, the role, an optional expiry and a revocation time; a
session cookie likewise. Passwords are hashed with Argon2id. Every request acts for exactly
one tenant (the token's, or the one chosen at sign-in); routes ask :func:`require` for the
role they need, and queries are filtered by ``principal.tenant``.

A credential checked against the store is trusted for :data:`CACHE_TTL_S` seconds
(:class:`Credentials`), so API calls do not each cost a database round trip: a revocation
made through this process applies at once, one made elsewhere (another UI process, the CLI)
within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cachetools import TTLCache
from starlette.requests import Request

from connectors.sql import ApiToken, SQLStore
from schemas.envelope import utcnow
from schemas.identity import Role
from ui.errors import APIError

log = logging.getLogger(__name__)

SESSION_COOKIE = "fd_session"
TOKEN_PREFIX = "fdt_"
#: how long a credential checked against the store is trusted before it is checked again
CACHE_TTL_S = 5.0
#: credentials remembered at most (the least recently checked go first)
CACHE_SIZE = 10_000
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Principal:
    """The caller: a user (signed in, or through a token) acting for one tenant."""

    name: str  # the user, or the name a token acts under (token:<id> when it has none)
    tenant: str
    role: Role
    via: str  # "token" or "session"
    credential_id: str  # token id, or session id hash

    def can(self, needed: Role) -> bool:
        return self.role.allows(needed)


class Credentials:
    """Recently checked credentials: credential id -> (SHA-256 of its secret, the caller)."""

    def __init__(self, ttl_s: float = CACHE_TTL_S, size: int = CACHE_SIZE) -> None:
        self._known: TTLCache[str, tuple[str, Principal]] = TTLCache(size, ttl_s)

    def get(self, credential_id: str, secret_hash: str) -> Principal | None:
        found = self._known.get(credential_id)
        if found is None or not hmac.compare_digest(found[0], secret_hash):
            return None
        return found[1]

    def put(self, secret_hash: str, principal: Principal) -> None:
        self._known[principal.credential_id] = (secret_hash, principal)

    def forget(self, credential_id: str) -> None:
        """Drop a revoked credential at once."""
        self._known.pop(credential_id, None)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_ok(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token(tenant: str, role: Role, name: str, created_by: str,
              ttl: timedelta | None) -> tuple[str, ApiToken]:
    """(the token text to hand out once, what the store keeps)."""
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    now = utcnow()
    record = ApiToken(id=token_id, tenant=tenant, role=str(role), name=name,
                      secret_hash=digest(secret), created_by=created_by, created_at=now,
                      expires_at=None if ttl is None else now + ttl, revoked_at=None,
                      last_used_at=None)
    return f"{TOKEN_PREFIX}{token_id}_{secret}", record


def split_token(text: str) -> tuple[str, str] | None:
    if not text.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = text[len(TOKEN_PREFIX):].partition("_")
    if not sep or not token_id or not secret or len(text) > 200:
        return None
    return token_id, secret


def usable(expires_at: datetime | None, revoked_at: datetime | None, now: datetime) -> bool:
    return revoked_at is None and (expires_at is None or expires_at > now)


async def from_token(sql: SQLStore, text: str, known: Credentials) -> Principal | None:
    parts = split_token(text)
    if parts is None:
        return None
    secret_hash = digest(parts[1])
    cached = known.get(parts[0], secret_hash)
    if cached is not None:
        return cached
    token = await sql.get_token(parts[0])
    now = utcnow()
    if token is None or not hmac.compare_digest(token.secret_hash, secret_hash) \
            or not usable(token.expires_at, token.revoked_at, now):
        return None
    await sql.touch_token(token.id, now)
    principal = Principal(name=token.name or f"token:{token.id}", tenant=token.tenant,
                          role=Role(token.role), via="token", credential_id=token.id)
    known.put(secret_hash, principal)
    return principal


async def from_session(sql: SQLStore, cookie: str, known: Credentials) -> Principal | None:
    if not cookie or len(cookie) > 200:
        return None
    session_id = digest(cookie)
    cached = known.get(session_id, session_id)
    if cached is not None:
        return cached
    session = await sql.get_session(session_id)
    if session is None or not usable(session.expires_at, session.revoked_at, utcnow()):
        return None
    principal = Principal(name=session.username, tenant=session.tenant,
                          role=Role(session.role), via="session", credential_id=session.id)
    known.put(session_id, principal)
    return principal


async def authenticate(request: Request) -> Principal | None:
    """The caller, from a bearer token or the session cookie (None: anonymous)."""
    cached = request.scope.get("fleetdeck.principal")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    sql: SQLStore = request.app.state.sql
    known: Credentials = request.app.state.credentials
    header = request.headers.get("authorization", "")
    principal = None
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            raise APIError(401, "unauthenticated", "use Authorization: Bearer <token>")
        principal = await from_token(sql, value.strip(), known)
        if principal is None:
            raise APIError(401, "unauthenticated", "the token is unknown, expired or revoked")
    elif SESSION_COOKIE in request.cookies:
        principal = await from_session(sql, request.cookies[SESSION_COOKIE], known)
    request.scope["fleetdeck.principal"] = principal
    return principal


async def require(request: Request, role: Role = Role.VIEWER) -> Principal:
    """The caller, who must be signed in with at least ``role``: 401 or 403 otherwise."""
    principal = await authenticate(request)
    if principal is None:
        raise APIError(401, "unauthenticated", "sign in, or send Authorization: Bearer <token>")
    if not principal.can(role):
        raise APIError(403, "forbidden", f"this needs the {role} role; you are "
                       f"{principal.role} in tenant {principal.tenant!r}")
    return principal
