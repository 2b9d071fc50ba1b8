"""Enrollment tokens and the server ids agents enroll under (pure logic, no I/O).

An enrollment token is ``fde_<id>_<secret>``: it lets one new server join one tenant, once,
before it expires. Like API tokens (:mod:`ui.auth`) only the SHA-256 of the secret is stored.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

from connectors.sql import Enrollment
from schemas.envelope import utcnow
from ui.auth import digest

ENROLL_PREFIX = "fde_"
DEFAULT_TTL = timedelta(hours=1)
MAX_TTL = timedelta(days=7)
MAX_TOKEN_CHARS = 200

_NOT_ID = re.compile(r"[^A-Za-z0-9._:-]+")


def new_enrollment(tenant: str, created_by: str,
                   ttl: timedelta = DEFAULT_TTL) -> tuple[str, Enrollment]:
    """(the token text to hand out once, what the store keeps)."""
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    now = utcnow()
    record = Enrollment(id=token_id, tenant=tenant, secret_hash=digest(secret),
                        created_by=created_by, created_at=now, expires_at=now + ttl,
                        used_at=None, server_id=None)
    return f"{ENROLL_PREFIX}{token_id}_{secret}", record


def split_enrollment(text: str) -> tuple[str, str] | None:
    """(token id, SHA-256 of the secret) of a well-formed token text, else None."""
    if not text.startswith(ENROLL_PREFIX) or len(text) > MAX_TOKEN_CHARS:
        return None
    token_id, sep, secret = text[len(ENROLL_PREFIX):].partition("_")
    if not sep or not token_id or not secret or len(token_id) > 64:
        return None
    return token_id, digest(secret)


def default_server_id(hostname: str) -> str | None:
    """The id a server gets when its agent names none: the host name's first label, as the
    agent's own default (``FLEETDECK_AGENT_SERVER_ID``) makes it, with characters an id cannot
    hold replaced by ``-``. None when nothing usable is left."""
    label = _NOT_ID.sub("-", hostname.strip().split(".")[0]).strip("-._:")
    return label[:128] or None
