"""The control-plane SQL store: alerting, the command bus and audit log, identity.

SQLAlchemy 2 async over SQLite (``aiosqlite``, the embedded default) or PostgreSQL
(``asyncpg``, scale-out); only the URL differs. The schema changes only through the Alembic
migrations shipped in ``connectors/migrations`` (:meth:`SQLStore.migrate`); the table classes
describe the same schema for the queries (a test checks that the two agree), and importing
this module registers every one of them on :class:`Base`.

Each stored model is a JSON column (``model_dump(mode="json")``) next to real columns for what
is filtered or ordered on; writes fed by Kafka are idempotent. Timestamps are stored in UTC
and always come back timezone-aware (SQLite keeps them naive). Library errors surface as
:class:`SQLError`.

The store is put together from one module per domain:

- ``sql_base``: settings, SQLError, column types, Base, engine and transaction helpers
- ``sql_alerts``: alert rules, silences, alerts, the notification outbox
- ``sql_commands``: command records, the hash-chained audit log
- ``sql_identity``: tenants, users, memberships, API tokens, sessions, approval policies,
  servers, enrollment tokens
"""

from __future__ import annotations

from connectors.sql_alerts import NOTIFICATION_STATES, AlertStore, Notification
from connectors.sql_base import Base, SQLError, SQLSettings, alembic_config
from connectors.sql_commands import AuditEntry, CommandStore
from connectors.sql_identity import (
    ApiToken,
    Enrolled,
    Enrollment,
    IdentityStore,
    Server,
    Session,
    Tenant,
    User,
)

__all__ = [
    "NOTIFICATION_STATES",
    "ApiToken",
    "AuditEntry",
    "Base",
    "Enrolled",
    "Enrollment",
    "Notification",
    "SQLError",
    "SQLSettings",
    "SQLStore",
    "Server",
    "Session",
    "Tenant",
    "User",
    "alembic_config",
]


class SQLStore(AlertStore, CommandStore, IdentityStore):
    """Async client of the control-plane database (one connection pool, opened on first use)."""
