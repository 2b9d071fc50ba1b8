"""The identity part of the SQL store: tenants, users and their roles, API tokens, sign-in
sessions, approval policies, the server registry and one-time enrollment tokens.

Secrets are never stored: tokens, sessions and enrollment tokens keep the SHA-256 of theirs
(``ui.auth``), users an Argon2id hash of the password. Each record comes back as a frozen
dataclass whose fields are the table's columns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Boolean, CheckConstraint, Index, String, or_, select, update
from sqlalchemy.orm import Mapped, mapped_column

from connectors.sql_base import Base, Json, SQLError, StoreBase, UtcDateTime
from schemas.envelope import utcnow
from schemas.identity import Role

R = TypeVar("R")
ROLES = tuple(str(role) for role in Role)
ROLE_CHECK = "role IN ({})".format(", ".join(f"'{role}'" for role in ROLES))
#: touch_token writes last_used_at at most this often per token
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class User:
    username: str
    password_hash: str
    created_at: datetime
    disabled: bool


@dataclass(frozen=True)
class ApiToken:
    """An API token ``fdt_<id>_<secret>``, acting for one tenant with one role."""

    id: str
    tenant: str
    role: str
    name: str
    secret_hash: str  # sha256 hex of the secret
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class Session:
    """A signed-in user acting for one tenant; ``id`` is the sha256 hex of the cookie."""

    id: str
    username: str
    tenant: str
    role: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Server:
    """An enrolled server and what its agent last said about itself."""

    id: str
    tenant: str
    hostname: str
    agent_version: str
    os: str
    capabilities: tuple[str, ...]
    enrolled_at: datetime
    last_seen_at: datetime | None


@dataclass(frozen=True)
class Enrolled:
    """What :meth:`IdentityStore.enroll_server` did."""

    tenant: str | None  # the token's tenant; None: the token is unknown, used or expired
    conflict: bool = False  # the server id is enrolled in another tenant (nothing changed)
    new: bool = False  # the server was not in the registry before


@dataclass(frozen=True)
class Enrollment:
    """A one-time token that lets a new server join ``tenant``."""

    id: str
    tenant: str
    secret_hash: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    server_id: str | None


# --- tables (created and changed only by connectors/migrations) ---------------------------

class TenantRow(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class UserRow(Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    disabled: Mapped[bool] = mapped_column(Boolean)


class MembershipRow(Base):
    __tablename__ = "memberships"
    __table_args__ = (CheckConstraint(ROLE_CHECK, name="ck_memberships_role"),)

    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_tenant_created", "tenant", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(128), index=True)
    tenant: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PolicyRow(Base):
    __tablename__ = "approval_policies"

    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    command_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    requires_approval: Mapped[bool] = mapped_column(Boolean)


class ServerRow(Base):
    __tablename__ = "servers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    hostname: Mapped[str] = mapped_column(String(256))
    agent_version: Mapped[str] = mapped_column(String(64))
    os: Mapped[str] = mapped_column(String(128))
    capabilities: Mapped[list[str]] = mapped_column(Json)
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class EnrollmentRow(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    server_id: Mapped[str | None] = mapped_column(String(128))


# --- the store's identity methods -----------------------------------------------------------------

class IdentityStore(StoreBase):
    """Tenants, users, memberships, tokens, sessions, policies, servers and enrollment."""

    # tenants and users

    async def create_tenant(self, tenant_id: str, name: str) -> bool:
        """Add a tenant: True if new, False (and nothing changes) if it exists."""
        values = {"id": tenant_id, "name": name, "created_at": utcnow()}
        return await self._insert_new("create tenant", TenantRow, values)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return await self._first("get tenant", Tenant, TenantRow, TenantRow.id == tenant_id)

    async def list_tenants(self) -> list[Tenant]:
        """Every tenant, by id."""
        return await self._all("list tenants", Tenant, TenantRow, order=TenantRow.id)

    async def create_user(self, username: str, password_hash: str) -> bool:
        """Add an enabled user: True if new, False (and nothing changes) if the name is taken."""
        values = {"username": username, "password_hash": password_hash, "created_at": utcnow(),
                  "disabled": False}
        return await self._insert_new("create user", UserRow, values)

    async def get_user(self, username: str) -> User | None:
        return await self._first("get user", User, UserRow, UserRow.username == username)

    async def set_password(self, username: str, password_hash: str) -> bool:
        """Replace the user's password hash; False if there is no such user."""
        statement = (update(UserRow).where(UserRow.username == username)
                     .values(password_hash=password_hash))
        return await self._execute("set password", statement) == 1

    async def set_membership(self, username: str, tenant: str, role: str) -> None:
        """Give the user ``role`` in ``tenant`` (replacing the role it had there)."""
        if str(role) not in ROLES:
            raise SQLError(f"set membership failed: unknown role {role!r} "
                           f"(one of {', '.join(ROLES)})")
        await self._upsert("set membership", MembershipRow,
                           {"username": username, "tenant": tenant, "role": str(role)})

    async def memberships(self, username: str) -> dict[str, str]:
        """The user's tenants: tenant -> role."""
        query = select(MembershipRow.tenant, MembershipRow.role).where(
            MembershipRow.username == username)
        return {tenant: role for tenant, role in await self._rows("memberships", query)}

    # API tokens and sessions

    async def create_token(self, token: ApiToken) -> None:
        """Store a new token; SQLError if its id is taken."""
        await self._insert_once("create token", ApiTokenRow, asdict(token), f"token {token.id}")

    async def get_token(self, token_id: str) -> ApiToken | None:
        return await self._first("get token", ApiToken, ApiTokenRow, ApiTokenRow.id == token_id)

    async def list_tokens(self, tenant: str) -> list[ApiToken]:
        """The tenant's tokens (revoked and expired ones too), newest first."""
        return await self._all("list tokens", ApiToken, ApiTokenRow, ApiTokenRow.tenant == tenant,
                               order=(ApiTokenRow.created_at.desc(), ApiTokenRow.id.desc()))

    async def revoke_token(self, token_id: str, tenant: str, at: datetime) -> bool:
        """Revoke the token at ``at``: False unless it is ``tenant``'s and not revoked yet."""
        statement = (update(ApiTokenRow)
                     .where(ApiTokenRow.id == token_id, ApiTokenRow.tenant == tenant,
                            ApiTokenRow.revoked_at.is_(None))
                     .values(revoked_at=at))
        return await self._execute("revoke token", statement) == 1

    async def touch_token(self, token_id: str, at: datetime) -> None:
        """Note that the token was used at ``at``. It runs on every API call, so the row is
        written only when its ``last_used_at`` is unset or at least :data:`TOUCH_EVERY` old."""
        t = ApiTokenRow
        statement = (update(t)
                     .where(t.id == token_id,
                            or_(t.last_used_at.is_(None), t.last_used_at <= at - TOUCH_EVERY))
                     .values(last_used_at=at))
        await self._execute("touch token", statement)

    async def create_session(self, session: Session) -> None:
        """Store a new session; SQLError if its id is taken."""
        await self._insert_once("create session", SessionRow, asdict(session), "the session")

    async def get_session(self, session_id: str) -> Session | None:
        return await self._first("get session", Session, SessionRow, SessionRow.id == session_id)

    async def revoke_session(self, session_id: str, at: datetime) -> bool:
        """End the session at ``at``: False if it is unknown or revoked already."""
        statement = (update(SessionRow)
                     .where(SessionRow.id == session_id, SessionRow.revoked_at.is_(None))
                     .values(revoked_at=at))
        return await self._execute("revoke session", statement) == 1

    # approval policies

    async def set_policy(self, tenant: str, command_type: str, requires: bool) -> None:
        """Require (or stop requiring) an approval for ``command_type`` in ``tenant``."""
        await self._upsert("set policy", PolicyRow, {"tenant": tenant, "command_type": command_type,
                                                     "requires_approval": requires})

    async def requires_approval(self, tenant: str, command_type: str) -> bool:
        """Whether the type needs an approval in the tenant (False when no policy says so)."""
        query = select(PolicyRow.requires_approval).where(
            PolicyRow.tenant == tenant, PolicyRow.command_type == command_type)
        return bool(await self._scalar("requires approval", query))

    async def list_policies(self, tenant: str) -> dict[str, bool]:
        """The tenant's stored policies: command type -> requires approval."""
        query = select(PolicyRow.command_type, PolicyRow.requires_approval).where(
            PolicyRow.tenant == tenant)
        return {kind: bool(needed) for kind, needed in await self._rows("list policies", query)}

    # servers and enrollment

    async def upsert_server(self, server: Server) -> bool:
        """Store the server, replacing what was stored under its id: True if it is new."""
        values = {**asdict(server), "capabilities": list(server.capabilities)}
        return await self._upsert("upsert server", ServerRow, values)

    async def get_server(self, server_id: str) -> Server | None:
        found = await self._first("get server", Server, ServerRow, ServerRow.id == server_id)
        return None if found is None else _server(found)

    async def list_servers(self, tenant: str) -> list[Server]:
        """The tenant's servers, by id."""
        found = await self._all("list servers", Server, ServerRow, ServerRow.tenant == tenant,
                                order=ServerRow.id)
        return [_server(server) for server in found]

    async def create_enrollment(self, enrollment: Enrollment) -> None:
        """Store a new enrollment token; SQLError if its id is taken."""
        await self._insert_once("create enrollment", EnrollmentRow, asdict(enrollment),
                                f"enrollment token {enrollment.id}")

    async def use_enrollment(self, token_id: str, secret_hash: str, server_id: str,
                             at: datetime) -> str | None:
        """Spend the enrollment token for ``server_id``: its tenant, if the secret matches and
        it was neither used nor expired at ``at``; None otherwise. One UPDATE decides, so of
        two racing servers only one gets the tenant."""
        e = EnrollmentRow
        statement = (update(e)
                     .where(e.id == token_id, e.secret_hash == secret_hash, e.used_at.is_(None),
                            e.expires_at > at)
                     .values(used_at=at, server_id=server_id).returning(e.tenant))
        tenant = await self._scalar("use enrollment", statement)
        return None if tenant is None else str(tenant)

    async def enroll_server(self, token_id: str, secret_hash: str, server: Server,
                            at: datetime) -> Enrolled:
        """Spend the enrollment token (as :meth:`use_enrollment`) and record ``server`` in
        the token's tenant (``server.tenant`` is ignored), in one transaction. A server id
        already enrolled in another tenant is a conflict: nothing changes and the token stays
        unspent. A re-enrollment in the same tenant replaces what the registry said."""
        e = EnrollmentRow
        spend = (update(e)
                 .where(e.id == token_id, e.secret_hash == secret_hash, e.used_at.is_(None),
                        e.expires_at > at)
                 .values(used_at=at, server_id=server.id).returning(e.tenant))
        try:
            async with self._tx("enroll server") as conn:
                tenant = (await conn.execute(spend)).scalar()
                if tenant is None:
                    return Enrolled(None)
                values = {**asdict(server), "tenant": str(tenant),
                          "capabilities": list(server.capabilities)}
                insert = self._insert(ServerRow).values(values)
                if (await conn.execute(insert.on_conflict_do_nothing())).rowcount:
                    return Enrolled(str(tenant), new=True)
                # the row exists: replace it only when it is this tenant's (atomic per row)
                replace = insert.on_conflict_do_update(
                    index_elements=["id"],
                    set_={k: insert.excluded[k] for k in values if k not in ("id", "tenant")},
                    where=ServerRow.tenant == str(tenant)).returning(ServerRow.id)
                if (await conn.execute(replace)).first() is None:
                    raise _Taken(str(tenant))  # rolls the spent token back
                return Enrolled(str(tenant))
        except _Taken as taken:
            return Enrolled(taken.tenant, conflict=True)

    # helpers

    async def _first(self, what: str, kind: type[R], row: type[Base], *where: Any) -> R | None:
        """The ``kind`` record of the one ``row`` matching ``where``, or None."""
        found = await self._rows(what, select(*_columns(kind, row)).where(*where))
        return kind(*found[0]) if found else None

    async def _all(self, what: str, kind: type[R], row: type[Base], *where: Any,
                   order: Any) -> list[R]:
        """The ``kind`` records of the ``row``\\ s matching ``where``, ordered by ``order``."""
        order_by = order if isinstance(order, tuple) else (order,)
        query = select(*_columns(kind, row)).where(*where).order_by(*order_by)
        return [kind(*found) for found in await self._rows(what, query)]


class _Taken(Exception):
    """Raised inside the enrollment transaction to roll it back."""

    def __init__(self, tenant: str) -> None:
        super().__init__(tenant)
        self.tenant = tenant


def _columns(kind: type[Any], row: type[Base]) -> list[Any]:
    """``row``'s columns named like the dataclass ``kind``'s fields, in their order."""
    return [getattr(row, field.name) for field in fields(kind)]


def _server(found: Server) -> Server:
    """Capabilities come back from JSON as a list."""
    return Server(**{**asdict(found), "capabilities": tuple(found.capabilities)})
