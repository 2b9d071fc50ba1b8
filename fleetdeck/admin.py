"""Bootstrapping and checking the control plane from a shell: tenants, users, tokens, policies
and the audit log. These talk to the SQL store directly (``FLEETDECK_SQL__URL``, by default the
embedded stack's SQLite file), so they work before the UI runs; each change they make is
appended to the audit log with the actor ``cli:<login name>``.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from connectors.sql_settings import SQLSettings
from schemas.alerts import parse_duration
from schemas.audit import AuditEvent
from schemas.envelope import ID_PATTERN
from schemas.identity import Role

if TYPE_CHECKING:  # loaded when a command runs: the agent's process has no use for it
    from connectors.sql import SQLStore

T = TypeVar("T")
console = Console(stderr=True)

users_app = typer.Typer(help="Users and their roles per tenant.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (stored hashed; shown once).", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
enroll_app = typer.Typer(help="One-time enrollment tokens for new agents (shown once).",
                         no_args_is_help=True)
policies_app = typer.Typer(help="Which command types need an approval.", no_args_is_help=True)

Tenant = Annotated[str, typer.Option("--tenant", help="Tenant id")]
RoleOpt = Annotated[Role, typer.Option("--role", help="viewer, operator, approver or admin")]


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETDECK_", env_nested_delimiter="__",
                                      extra="ignore")
    sql: SQLSettings = Field(default_factory=SQLSettings)


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid-{os.getuid()}"


def run(work: Callable[[SQLStore], Awaitable[T]]) -> T:
    """Run ``work`` against a migrated store; a store error is one clear line and exit 1."""
    from connectors.sql import SQLError, SQLStore

    async def go() -> T:
        sql = SQLStore(AdminSettings().sql)
        if sql.sqlite_path is not None and not sql.sqlite_path.exists():
            # by default a path relative to the current directory: a store made by mistake
            # elsewhere holds tokens the running stack does not know
            typer.echo(f"fleetdeck: no store at {sql.sqlite_path.resolve()} yet: creating a "
                       "new, empty one. The running stack's store is FLEETDECK_SQL__URL, or "
                       ".fleetdeck/fleetdeck.db in the directory it was started from.", err=True)
        try:
            await sql.migrate()
            return await work(sql)
        finally:
            await sql.close()

    try:
        return asyncio.run(go())
    except SQLError as exc:
        typer.echo(f"fleetdeck: {exc}", err=True)
        raise typer.Exit(1) from None


async def audited(sql: SQLStore, tenant: str, action: str, target: str,
                  after: dict[str, Any] | None = None, *, reason: str = "",
                  before: dict[str, Any] | None = None) -> None:
    await sql.append_audit([AuditEvent(tenant=tenant, actor=actor(), action=action,
                                       target=target, reason=reason, before=before,
                                       after=after)])


def check_id(value: str, what: str) -> str:
    """``value`` if it is a valid id (tenant, user, …), else a usage error."""
    import re

    if not re.fullmatch(ID_PATTERN, value):
        raise typer.BadParameter(f"{what} ids are letters, digits and . _ : - (at most 128)")
    return value


@tenants_app.command("create")
def tenants_create(tenant_id: Annotated[str, typer.Argument(help="Tenant id")],
                   name: Annotated[str, typer.Option(help="Display name")] = "") -> None:
    """Create a tenant."""
    check_id(tenant_id, "tenant")

    async def work(sql: SQLStore) -> bool:
        created = await sql.create_tenant(tenant_id, name or tenant_id)
        if created:
            await audited(sql, tenant_id, "tenant.create", f"tenant:{tenant_id}")
        return created

    typer.echo(f"tenant {tenant_id} " + ("created" if run(work) else "exists already"))


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="User name")],
    tenant: Tenant = "default", role: RoleOpt = Role.VIEWER,
    password: Annotated[str | None, typer.Option(
        help="Password (prompted when omitted; FLEETDECK_PASSWORD also works)",
        envvar="FLEETDECK_PASSWORD")] = None,
) -> None:
    """Create a user (or give an existing one a role in another tenant)."""
    from ui.auth import hash_password

    check_id(tenant, "tenant")
    if not 1 <= len(username) <= 128:
        raise typer.BadParameter("1 to 128 characters", param_hint="USERNAME")

    async def work(sql: SQLStore) -> str:
        await sql.create_tenant(tenant, tenant)
        secret = password
        exists = await sql.get_user(username) is not None
        if not exists:
            if secret is None:
                secret = typer.prompt("password", hide_input=True, confirmation_prompt=True)
            if len(secret) < 10:
                raise typer.BadParameter("at least 10 characters", param_hint="--password")
            await sql.create_user(username, hash_password(secret))
        await sql.set_membership(username, tenant, str(role))
        await audited(sql, tenant, "user.create" if not exists else "user.role",
                      f"user:{username}", {"role": str(role)})
        return "created" if not exists else "updated"

    done = run(work)
    typer.echo(f"user {username} {done}: {role} in tenant {tenant}")


@tokens_app.command("create")
def tokens_create(
    tenant: Tenant, role: RoleOpt,
    name: Annotated[str, typer.Option(help="Who or what acts with it (shown in the audit log)")]
    = "",
    ttl_days: Annotated[float | None, typer.Option(min=0.001, help="Expiry in days "
                                                   "(omit: none)")] = None,
) -> None:
    """Create an API token; its text is printed once, on stdout."""
    from ui.auth import new_token

    check_id(tenant, "tenant")
    ttl = None if ttl_days is None else timedelta(days=ttl_days)
    text, record = new_token(tenant, role, name, actor(), ttl)

    async def work(sql: SQLStore) -> None:
        if await sql.create_tenant(tenant, tenant):
            typer.echo(f"fleetdeck: tenant {tenant!r} did not exist: created", err=True)
        await sql.create_token(record)
        await audited(sql, tenant, "token.create", f"token:{record.id}",
                      {"name": name, "role": str(role)})

    run(work)
    console.print(f"token {record.id} for tenant {tenant} with role {role}"
                  + (f", expires {record.expires_at:%Y-%m-%d %H:%M} UTC"
                     if record.expires_at else "") + " (shown once):")
    typer.echo(text)


@tokens_app.command("list")
def tokens_list(tenant: Tenant) -> None:
    """List a tenant's tokens (never their secrets)."""
    tokens = run(lambda sql: sql.list_tokens(tenant))
    table = Table("id", "name", "role", "created", "expires", "revoked", "last used")
    for t in tokens:
        table.add_row(t.id, t.name, t.role, f"{t.created_at:%Y-%m-%d %H:%M}",
                      *(f"{v:%Y-%m-%d %H:%M}" if v else "-"
                        for v in (t.expires_at, t.revoked_at, t.last_used_at)))
    Console().print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="Token id")],
                  tenant: Tenant) -> None:
    """Revoke a token at once."""
    from schemas.envelope import utcnow

    async def work(sql: SQLStore) -> bool:
        done = await sql.revoke_token(token_id, tenant, utcnow())
        if done:
            await audited(sql, tenant, "token.revoke", f"token:{token_id}")
        return done

    if not run(work):
        typer.echo(f"fleetdeck: no active token {token_id} in tenant {tenant}", err=True)
        raise typer.Exit(1)
    typer.echo(f"token {token_id} revoked")


@enroll_app.command("create")
def enroll_create(
    tenant: Tenant,
    ttl: Annotated[str, typer.Option(help="Expiry, e.g. 30m, 1h, 2d (at most 7d)")] = "1h",
    note: Annotated[str, typer.Option(help="What it is for (kept in the audit log)")] = "",
) -> None:
    """Create a one-time enrollment token; its text is printed once, on stdout."""
    from ui.enrollment import MAX_TTL, new_enrollment

    check_id(tenant, "tenant")
    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ttl") from None
    if not 60 <= seconds <= MAX_TTL.total_seconds():
        raise typer.BadParameter("between 1m and 7d", param_hint="--ttl")
    text, record = new_enrollment(tenant, actor(), timedelta(seconds=seconds))

    async def work(sql: SQLStore) -> None:
        if await sql.create_tenant(tenant, tenant):
            typer.echo(f"fleetdeck: tenant {tenant!r} did not exist: created", err=True)
        await sql.create_enrollment(record)
        await sql.append_audit([AuditEvent(
            tenant=tenant, actor=actor(), action="enrollment.create",
            target=f"enrollment:{record.id}", reason=note[:2000],
            after={"expires_at": record.expires_at.isoformat()})])

    run(work)
    console.print(f"enrollment token {record.id} for tenant {tenant}, one use, expires "
                  f"{record.expires_at:%Y-%m-%d %H:%M} UTC (shown once):")
    typer.echo(text)


@policies_app.command("set")
def policies_set(command_type: Annotated[str, typer.Argument(help="Command type, e.g. PING")],
                 tenant: Tenant,
                 reason: Annotated[str, typer.Option(help="Why the policy changes (audited)")],
                 approval: Annotated[bool, typer.Option("--approval/--no-approval",
                                                        help="Require an approval")] = True
                 ) -> None:
    """Require (or stop requiring) an approval for a command type in a tenant."""
    from schemas.commands import COMMAND_TYPES

    if command_type not in COMMAND_TYPES:
        raise typer.BadParameter(f"known types: {', '.join(sorted(COMMAND_TYPES))}",
                                 param_hint="COMMAND_TYPE")

    if len(reason.strip()) < 3:
        raise typer.BadParameter("say why, in at least 3 characters", param_hint="--reason")

    async def work(sql: SQLStore) -> None:
        before = await sql.requires_approval(tenant, command_type)
        await sql.set_policy(tenant, command_type, approval)
        await audited(sql, tenant, "policy.set", f"policy:{command_type}",
                      {"requires_approval": approval}, reason=reason.strip(),
                      before={"requires_approval": before})

    run(work)
    typer.echo(f"{command_type} in {tenant}: " + ("needs approval" if approval
                                                 else "no approval needed"))


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the whole hash chain; exit 1 naming every record edited, deleted or out of place."""
    with Progress(TextColumn("verifying audit log"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("verify", total=None)

        def seen(count: int) -> None:
            progress.update(task, completed=count)

        checked, problems = run(lambda sql: sql.verify_audit(progress=seen))
    if not problems:
        typer.echo(f"audit log intact: {checked} records, hash chain verified")
        return
    for p in problems:
        typer.echo(f"record {p.seq} (event {p.event_id}): {p.problem}")
    typer.echo(f"audit log TAMPERED: {len(problems)} problem(s) in {checked} records", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(enroll_app, name="enroll")
    app.add_typer(policies_app, name="policies")
    app.add_typer(audit_app, name="audit")
