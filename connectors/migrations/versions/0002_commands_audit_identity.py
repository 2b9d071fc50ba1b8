"""Command bus, audit log and identity: commands, audit_log, tenants, users, memberships,
api_tokens, sessions, approval_policies, servers, enrollment_tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here rather than imported from connectors.sql: a revision must keep creating
# the schema of its day whatever the models become later.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ROLE_CHECK = "role IN ('viewer', 'operator', 'approver', 'admin')"


def ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def text(name: str, length: int, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.String(length), nullable=nullable)


def upgrade() -> None:
    _commands()
    _audit_log()
    _identity()
    _servers()


def _commands() -> None:
    op.create_table(
        "commands",
        sa.Column("id", sa.String(32), primary_key=True),
        text("tenant", 128),
        text("server_id", 128),
        text("type", 64),
        text("status", 32),
        text("actor", 128),
        ts("created_at"),
        ts("updated_at"),
        ts("expires_at"),
        ts("deadline_at", nullable=True),
        sa.Column("data", JSON, nullable=False),
    )
    op.create_index("ix_commands_tenant_server_created", "commands",
                    ["tenant", "server_id", "created_at"])
    op.create_index("ix_commands_tenant_created", "commands", ["tenant", "created_at"])
    op.create_index("ix_commands_status_expires", "commands", ["status", "expires_at"])
    op.create_index("ix_commands_status_deadline", "commands", ["status", "deadline_at"])


def _audit_log() -> None:
    # seq is assigned by the store (1, 2, 3, ... without gaps), never by the database.
    # body is the exact text that was hashed: TEXT, not JSON (which would be re-serialised).
    op.create_table(
        "audit_log",
        sa.Column("seq", BIG_INT, primary_key=True, autoincrement=False),
        text("event_id", 64),
        text("tenant", 128),
        text("actor", 128),
        text("action", 64),
        text("target", 256),
        ts("ts"),
        text("prev_hash", 64),
        text("hash", 64),
        sa.Column("body", sa.Text(), nullable=False),
        sa.UniqueConstraint("event_id", name="uq_audit_log_event_id"),
    )
    # Filtered lists are read newest first: seq ends each index, so it serves the order too.
    op.create_index("ix_audit_log_tenant_seq", "audit_log", ["tenant", "seq"])
    for column in ("actor", "action", "target"):
        op.create_index(f"ix_audit_log_tenant_{column}", "audit_log", ["tenant", column, "seq"])


def _identity() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(128), primary_key=True),
        text("name", 256),
        ts("created_at"),
    )
    op.create_table(
        "users",
        sa.Column("username", sa.String(128), primary_key=True),
        text("password_hash", 512),
        ts("created_at"),
        sa.Column("disabled", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "memberships",
        sa.Column("username", sa.String(128), primary_key=True),
        sa.Column("tenant", sa.String(128), primary_key=True),
        text("role", 16),
        sa.CheckConstraint(ROLE_CHECK, name="ck_memberships_role"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        text("tenant", 128),
        text("role", 16),
        text("name", 128),
        text("secret_hash", 64),
        text("created_by", 128),
        ts("created_at"),
        ts("expires_at", nullable=True),
        ts("revoked_at", nullable=True),
        ts("last_used_at", nullable=True),
    )
    op.create_index("ix_api_tokens_tenant_created", "api_tokens", ["tenant", "created_at"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        text("username", 128),
        text("tenant", 128),
        text("role", 16),
        ts("created_at"),
        ts("expires_at"),
        ts("revoked_at", nullable=True),
    )
    op.create_index("ix_sessions_username", "sessions", ["username"])
    op.create_table(
        "approval_policies",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("command_type", sa.String(64), primary_key=True),
        sa.Column("requires_approval", sa.Boolean(), nullable=False),
    )


def _servers() -> None:
    op.create_table(
        "servers",
        sa.Column("id", sa.String(128), primary_key=True),
        text("tenant", 128),
        text("hostname", 256),
        text("agent_version", 64),
        text("os", 128),
        sa.Column("capabilities", JSON, nullable=False),
        ts("enrolled_at"),
        ts("last_seen_at", nullable=True),
    )
    op.create_index("ix_servers_tenant", "servers", ["tenant"])
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        text("tenant", 128),
        text("secret_hash", 64),
        text("created_by", 128),
        ts("created_at"),
        ts("expires_at"),
        ts("used_at", nullable=True),
        text("server_id", 128, nullable=True),
    )


def downgrade() -> None:
    for table in ("enrollment_tokens", "servers", "approval_policies", "sessions",
                  "api_tokens", "memberships", "users", "tenants", "audit_log", "commands"):
        op.drop_table(table)
