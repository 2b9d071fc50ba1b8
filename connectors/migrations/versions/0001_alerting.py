"""Alerting: rules, silences, alerts (current state and history), notification outbox.

Revision ID: 0001
Revises:
Create Date: 2025-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here rather than imported from connectors.sql: a revision must keep creating
# the schema of its day whatever the models become later.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY


def ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        ts("updated_at"),
    )
    op.create_table(
        "silences",
        sa.Column("id", sa.String(64), primary_key=True),
        ts("starts_at"),
        ts("ends_at"),
        ts("created_at"),
        sa.Column("data", JSON, nullable=False),
    )
    op.create_index("ix_silences_ends_at", "silences", ["ends_at"])

    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("server_id", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        ts("ts"),
        sa.Column("data", JSON, nullable=False),
    )
    for column in ("rule_id", "server_id", "state", "ts"):
        op.create_index(f"ix_alerts_{column}", "alerts", [column])

    op.create_table(
        "alert_events",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("server_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        ts("ts"),
        sa.Column("data", JSON, nullable=False),
        sa.UniqueConstraint("alert_id", "seq", name="uq_alert_events_alert_seq"),
    )
    op.create_index("ix_alert_events_server_ts", "alert_events", ["server_id", "ts"])

    op.create_table(
        "notifications",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("receiver", sa.String(128), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        ts("next_attempt_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        ts("created_at"),
        ts("sent_at", nullable=True),
        sa.UniqueConstraint("alert_id", "seq", "receiver", name="uq_notifications_event_receiver"),
        sa.CheckConstraint("state IN ('pending', 'sent', 'failed')",
                           name="ck_notifications_state"),
    )
    op.create_index("ix_notifications_due", "notifications", ["state", "next_attempt_at"])


def downgrade() -> None:
    for table in ("notifications", "alert_events", "alerts", "silences", "alert_rules"):
        op.drop_table(table)
