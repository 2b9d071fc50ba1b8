"""First-run set-up of the embedded stack: a local admin to sign in with."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from connectors.sql import SQLSettings, SQLStore
from schemas.audit import AuditEvent

ADMIN = "admin"
TENANT = "default"


def ensure_admin(sql_url: str, data_dir: Path) -> tuple[str, str | None]:
    """Create ``admin`` (role admin in tenant ``default``) unless it exists; its password goes
    to ``data_dir/admin-password`` (mode 0600) and is returned once."""
    password = asyncio.run(_create_admin(sql_url))
    if password is None:
        return ADMIN, None
    path = data_dir / "admin-password"
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return ADMIN, password


async def _create_admin(sql_url: str) -> str | None:
    from ui.auth import hash_password

    sql = SQLStore(SQLSettings(url=sql_url))
    try:
        await sql.migrate()
        if await sql.get_user(ADMIN) is not None:
            return None
        password = secrets.token_urlsafe(12)
        await sql.create_tenant(TENANT, "Default")
        await sql.create_user(ADMIN, hash_password(password))
        await sql.set_membership(ADMIN, TENANT, "admin")
        await sql.append_audit([AuditEvent(tenant=TENANT, actor="fleetdeck-up",
                                           action="user.create", target=f"user:{ADMIN}",
                                           after={"role": "admin"})])
    finally:
        await sql.close()
    return password
