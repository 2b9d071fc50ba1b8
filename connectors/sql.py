"""The control-plane SQL store: alert rules, silences, alerts and the notification outbox.

SQLAlchemy 2 async over SQLite (``aiosqlite``, the embedded default) or PostgreSQL
(``asyncpg``, scale-out); only the URL differs. The schema changes only through the Alembic
migrations shipped in ``connectors/migrations`` (:meth:`SQLStore.migrate`); the table classes
below describe the same schema for the queries (a test checks that the two agree).

Each stored model is a JSON column (``model_dump(mode="json")``) next to real columns for what
is filtered or ordered on. Writes fed by Kafka are idempotent: an alert event is identified by
``(alert_id, seq)`` and a notification by ``(alert_id, seq, receiver)``, so a redelivered
message changes nothing twice.

Timestamps are stored in UTC and always come back timezone-aware (SQLite keeps them naive).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from connectors.errors import ConnectorError
from schemas.alerts import AlertEvent, AlertRule, Silence

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

MIGRATIONS = Path(__file__).with_name("migrations")
CONNECT_TIMEOUT_S = 10.0
SQLITE_BUSY_TIMEOUT_MS = 10_000
NOTIFICATION_STATES = ("pending", "sent", "failed")


class SQLError(ConnectorError):
    """The database could not be reached, or it refused a statement."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable  # a connection problem: trying again later may help


class SQLSettings(BaseModel):
    url: str = Field("sqlite+aiosqlite:///.fleetdeck/fleetdeck.db",
                     description="SQLAlchemy URL: sqlite+aiosqlite:///path/to.db or "
                     "postgresql+asyncpg://user:password@host:5432/db (plain sqlite:// and "
                     "postgresql:// get the async driver)")
    echo: bool = Field(False, description="Log every SQL statement (debugging)")


@dataclass(frozen=True)
class Notification:
    """One message of the outbox, to deliver to one receiver."""

    id: int
    alert_id: str
    seq: int
    receiver: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None


# --- schema (created and changed only by connectors/migrations) -----------------------------

class UtcDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that takes aware datetimes only and returns aware UTC.

    SQLite has no time zones: values go in as naive UTC (so text comparison orders them) and
    come back marked UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must carry a timezone (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite auto-increments only an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit sequence.
RowId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class AlertRuleRow(Base):
    __tablename__ = "alert_rules"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean)
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SilenceRow(Base):
    __tablename__ = "silences"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(Json)


class AlertRow(Base):
    """The current state of each alert: its newest event."""

    __tablename__ = "alerts"

    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    rule_id: Mapped[str] = mapped_column(String(128), index=True)
    server_id: Mapped[str] = mapped_column(String(128), index=True)
    tenant: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    ts: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    data: Mapped[dict[str, Any]] = mapped_column(Json)


class AlertEventRow(Base):
    """Every event of every alert (the history)."""

    __tablename__ = "alert_events"
    __table_args__ = (
        UniqueConstraint("alert_id", "seq", name="uq_alert_events_alert_seq"),
        Index("ix_alert_events_server_ts", "server_id", "ts"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    rule_id: Mapped[str] = mapped_column(String(128))
    server_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(Json)


class NotificationRow(Base):
    """The outbox: one row per (alert event, receiver), delivered at least once."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("alert_id", "seq", "receiver", name="uq_notifications_event_receiver"),
        CheckConstraint("state IN ('pending', 'sent', 'failed')", name="ck_notifications_state"),
        Index("ix_notifications_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    receiver: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


# --- the store ---------------------------------------------------------------------------------

class SQLStore:
    """Async client of the control-plane database (one connection pool, opened on first use)."""

    def __init__(self, settings: SQLSettings) -> None:
        self.settings = settings
        url = _async_url(settings.url)
        self._where = url.render_as_string(hide_password=True)
        self._dialect = url.get_backend_name()
        self._engine = _engine(url, settings.echo)

    async def close(self) -> None:
        await self._engine.dispose()

    async def migrate(self) -> None:
        """Upgrade the schema to the newest migration (a no-op when it is there already)."""
        async with self._tx("migrate") as conn:
            # One migration at a time when processes start together (UI and workers); the
            # others wait, then find the schema current.
            if self._dialect == "postgresql":
                await conn.execute(select(func.pg_advisory_xact_lock(0x46440001)))
            else:
                # The driver would begin a transaction only before DML, leaving each DDL
                # statement on its own; this takes the write lock and makes it all one.
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                await conn.run_sync(_upgrade)
            except CommandError as exc:
                raise SQLError(f"migrate failed on {self._where}: {exc}") from exc

    # rules

    async def upsert_rule(self, rule: AlertRule) -> bool:
        """Store ``rule``: True if it is new, False if it replaced one with the same id."""
        values = {"id": rule.id, "kind": rule.kind, "severity": str(rule.severity),
                  "enabled": rule.enabled, "data": rule.model_dump(mode="json"),
                  "updated_at": datetime.now(UTC)}
        async with self._tx("upsert rule") as conn:
            created = await conn.execute(
                self._insert(AlertRuleRow).values(values).on_conflict_do_nothing())
            if created.rowcount:
                return True
            # An upsert rather than an UPDATE: the rule may have been deleted in between.
            stmt = self._insert(AlertRuleRow).values(values)
            await conn.execute(stmt.on_conflict_do_update(
                index_elements=[AlertRuleRow.id],
                set_={k: stmt.excluded[k] for k in values if k != "id"}))
            return False

    async def get_rule(self, rule_id: str) -> AlertRule | None:
        data = await self._scalar("get rule",
                                  select(AlertRuleRow.data).where(AlertRuleRow.id == rule_id))
        return None if data is None else _load(AlertRule, data)

    async def list_rules(self) -> list[AlertRule]:
        """Every rule; a stored rule that no longer validates is logged and left out, so
        one bad row cannot take every rule away."""
        query = select(AlertRuleRow.data).order_by(AlertRuleRow.id)
        return _load_valid(AlertRule, await self._scalars("list rules", query))

    async def delete_rule(self, rule_id: str) -> bool:
        async with self._tx("delete rule") as conn:
            result = await conn.execute(delete(AlertRuleRow).where(AlertRuleRow.id == rule_id))
            return bool(result.rowcount)

    # silences

    async def add_silence(self, silence: Silence) -> None:
        async with self._tx("add silence") as conn:
            added = await conn.execute(
                self._insert(SilenceRow).values(_silence_values(silence)).on_conflict_do_nothing())
        if not added.rowcount:
            raise SQLError(f"add silence failed: a silence with id {silence.id!r} exists already")

    async def get_silence(self, silence_id: str) -> Silence | None:
        data = await self._scalar("get silence",
                                  select(SilenceRow.data).where(SilenceRow.id == silence_id))
        return None if data is None else _load(Silence, data)

    async def list_silences(self, *, include_expired: bool = False,
                            at: datetime | None = None) -> list[Silence]:
        """Silences not expired at ``at`` (``ends_at > at``; default now), newest first."""
        query = select(SilenceRow.data).order_by(SilenceRow.created_at.desc(),
                                                 SilenceRow.id.desc())
        if not include_expired:
            query = query.where(SilenceRow.ends_at > (at or datetime.now(UTC)))
        return [_load(Silence, data) for data in await self._scalars("list silences", query)]

    async def expire_silence(self, silence_id: str, at: datetime) -> Silence | None:
        """End the silence at ``at`` if it ended later; the silence as stored, None if unknown."""
        async with self._tx("expire silence") as conn:
            # Write first: the row is locked (SQLite: the database) before it is read.
            data = (await conn.execute(
                update(SilenceRow).where(SilenceRow.id == silence_id, SilenceRow.ends_at > at)
                .values(ends_at=at).returning(SilenceRow.data))).scalar()
            if data is None:  # unknown, or over by then already
                data = (await conn.execute(
                    select(SilenceRow.data).where(SilenceRow.id == silence_id))).scalar()
                return None if data is None else _load(Silence, data)
            silence = _expired(_load(Silence, data), at)
            await conn.execute(update(SilenceRow).where(SilenceRow.id == silence_id)
                               .values(_silence_values(silence)))
            return silence

    # alerts

    async def record_alert_event(self, event: AlertEvent) -> bool:
        """Add ``event`` to its alert's history and make it current if it is the newest.

        False (and nothing changes) when ``(alert_id, seq)`` is stored already. An event older
        than the current one (delivered out of order) joins the history only.
        """
        data = event.model_dump(mode="json")
        common = {"alert_id": event.alert_id, "seq": event.seq, "rule_id": event.rule_id,
                  "server_id": event.server_id, "state": str(event.state), "ts": event.ts,
                  "data": data}
        current = {**common, "tenant": event.tenant, "severity": str(event.severity)}
        async with self._tx("record alert event") as conn:
            added = await conn.execute(
                self._insert(AlertEventRow).values(common).on_conflict_do_nothing())
            if not added.rowcount:
                return False
            stmt = self._insert(AlertRow).values(current)
            await conn.execute(stmt.on_conflict_do_update(
                index_elements=[AlertRow.alert_id],
                set_={k: stmt.excluded[k] for k in current if k != "alert_id"},
                where=AlertRow.seq < stmt.excluded.seq))
            return True

    async def list_alerts(self, *, states: Sequence[str] | None = None,
                          severity: str | None = None, server_id: str | None = None,
                          rule_id: str | None = None, limit: int = 500) -> list[AlertEvent]:
        """Current alerts (each alert's newest event), newest first; None = no filter."""
        query = select(AlertRow.data).order_by(AlertRow.ts.desc(), AlertRow.alert_id).limit(limit)
        if states is not None:
            query = query.where(AlertRow.state.in_([str(s) for s in states]))
        if severity is not None:
            query = query.where(AlertRow.severity == str(severity))
        if server_id is not None:
            query = query.where(AlertRow.server_id == server_id)
        if rule_id is not None:
            query = query.where(AlertRow.rule_id == rule_id)
        return [_load(AlertEvent, data) for data in await self._scalars("list alerts", query)]

    async def get_alert(self, alert_id: str) -> AlertEvent | None:
        data = await self._scalar("get alert",
                                  select(AlertRow.data).where(AlertRow.alert_id == alert_id))
        return None if data is None else _load(AlertEvent, data)

    async def alert_history(self, alert_id: str, limit: int = 200) -> list[AlertEvent]:
        """The newest ``limit`` events of the alert, in ascending ``seq`` order."""
        query = (select(AlertEventRow.data).where(AlertEventRow.alert_id == alert_id)
                 .order_by(AlertEventRow.seq.desc()).limit(limit))
        rows = await self._scalars("alert history", query)
        return [_load(AlertEvent, data) for data in reversed(rows)]

    async def server_alert_events(self, server_id: str, since: datetime,
                                  limit: int = 5000) -> list[AlertEvent]:
        """Events of the server's alerts at or after ``since``, oldest first (chart markers),
        at most ``limit``."""
        query = (select(AlertEventRow.data)
                 .where(AlertEventRow.server_id == server_id, AlertEventRow.ts >= since)
                 .order_by(AlertEventRow.ts, AlertEventRow.id).limit(limit))
        return [_load(AlertEvent, d) for d in await self._scalars("server alert events", query)]

    # notification outbox

    async def enqueue_notification(self, alert_id: str, seq: int, receiver: str,
                                   payload: dict[str, Any]) -> bool:
        """Queue a delivery, due now; False if this (alert_id, seq, receiver) is queued already."""
        now = datetime.now(UTC)
        values = {"alert_id": alert_id, "seq": seq, "receiver": receiver, "payload": payload,
                  "state": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
        async with self._tx("enqueue notification") as conn:
            added = await conn.execute(
                self._insert(NotificationRow).values(values).on_conflict_do_nothing())
            return bool(added.rowcount)

    async def due_notifications(self, at: datetime, limit: int = 100) -> list[Notification]:
        """Pending deliveries whose time has come by ``at``, oldest first."""
        n = NotificationRow
        query = (select(n.id, n.alert_id, n.seq, n.receiver, n.payload, n.attempts,
                        n.next_attempt_at, n.last_error)
                 .where(n.state == "pending", n.next_attempt_at <= at)
                 .order_by(n.next_attempt_at, n.id).limit(limit))
        async with self._tx("due notifications") as conn:
            rows = (await conn.execute(query)).all()
        return [Notification(*row) for row in rows]

    async def notification_sent(self, notification_id: int, at: datetime) -> None:
        """Mark a pending delivery done (the send counts as an attempt)."""
        await self._update_pending("notification sent", notification_id, state="sent",
                                   sent_at=at, attempts=NotificationRow.attempts + 1)

    async def notification_failed(self, notification_id: int, error: str,
                                  next_attempt_at: datetime | None) -> None:
        """Count a failed attempt; try again at ``next_attempt_at``, or give up when None."""
        retry: dict[str, Any] = ({"state": "failed"} if next_attempt_at is None
                                 else {"next_attempt_at": next_attempt_at})
        await self._update_pending("notification failed", notification_id,
                                   attempts=NotificationRow.attempts + 1,
                                   last_error=error[:2000], **retry)

    async def notification_counts(self) -> dict[str, int]:
        query = select(NotificationRow.state, func.count()).group_by(NotificationRow.state)
        async with self._tx("notification counts") as conn:
            found = {state: int(count) for state, count in (await conn.execute(query)).all()}
        return {state: found.get(state, 0) for state in NOTIFICATION_STATES}

    # helpers

    @asynccontextmanager
    async def _tx(self, what: str) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction (committed on exit); library errors become SQLError."""
        try:
            async with self._engine.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise _error(what, self._where, exc) from exc

    def _insert(self, entity: type[Base]) -> postgresql.Insert | sqlite.Insert:
        """INSERT with the dialect's ON CONFLICT clauses (both spell them the same way)."""
        return postgresql.insert(entity) if self._dialect == "postgresql" else sqlite.insert(entity)

    async def _scalar(self, what: str, query: Any) -> Any:
        async with self._tx(what) as conn:
            return (await conn.execute(query)).scalar()

    async def _scalars(self, what: str, query: Any) -> list[Any]:
        async with self._tx(what) as conn:
            return list((await conn.execute(query)).scalars())

    async def _update_pending(self, what: str, notification_id: int, **values: Any) -> None:
        """Update a notification still pending (a late report about a settled one is dropped)."""
        async with self._tx(what) as conn:
            result = await conn.execute(
                update(NotificationRow)
                .where(NotificationRow.id == notification_id, NotificationRow.state == "pending")
                .values(**values))
        if not result.rowcount:
            log.warning("%s: notification %s is not pending; ignored", what, notification_id)


# --- engine, migrations, conversions -------------------------------------------------------------

def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration, built in code (no alembic.ini): the shipped migrations, run on
    ``connection`` (what :meth:`SQLStore.migrate` does) or on ``url``. For developers::

        config = alembic_config(url="sqlite+aiosqlite:///dev.db")
        command.upgrade(config, "head")
        command.revision(config, "what changed", autogenerate=True)
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _async_url(raw: str) -> URL:
    """Parse the URL, choosing the async driver for plain sqlite:// and postgresql://."""
    try:
        url = make_url(raw)
    except SQLAlchemyError as exc:
        raise SQLError(f"invalid database URL {raw!r}: {exc}") from exc
    drivers = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
    if url.drivername in drivers:
        url = url.set(drivername=drivers[url.drivername])
    if url.drivername not in drivers.values():
        raise SQLError(f"unsupported database URL {url.render_as_string(hide_password=True)}: "
                       "use sqlite+aiosqlite:// or postgresql+asyncpg://")
    return url


def _engine(url: URL, echo: bool) -> AsyncEngine:
    if url.get_backend_name() == "postgresql":
        return create_async_engine(url, echo=echo, pool_pre_ping=True,
                                   connect_args={"timeout": CONNECT_TIMEOUT_S})
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, echo=echo)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers (the UI) run while a writer (a worker) commits; writers queue for up to
    the busy timeout instead of failing at once with "database is locked"."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _error(what: str, where: str, exc: BaseException) -> SQLError:
    """A readable SQLError for a library error: the driver's message, without SQL or links."""
    unreachable = isinstance(exc, OSError | TimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)
    if unreachable:
        return SQLError(f"{what} failed: cannot reach the database at {where}: "
                        f"{_reason(exc)}", unreachable=True)
    return SQLError(f"{what} failed on {where}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    """``Kind: first line of the message``. SQLAlchemy's own message would add the statement,
    its parameters and a link; a DBAPIError's class names the kind (IntegrityError, ...) better
    than the driver's adapted one."""
    kind = type(exc).__name__
    if isinstance(exc, StatementError) and exc.orig is not None:
        if not isinstance(exc, DBAPIError):  # e.g. a bind parameter that did not convert
            kind = type(exc.orig).__name__
        exc = exc.orig
    text = str(exc).strip().splitlines()
    return f"{kind}: {text[0]}" if text else kind


def _load(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SQLError(f"a stored {model.__name__} no longer validates: {exc}") from exc


def _load_valid(model: type[M], rows: Iterable[Any]) -> list[M]:
    found = []
    for data in rows:
        try:
            found.append(model.model_validate(data))
        except ValidationError as exc:
            log.error("skipping a stored %s that no longer validates: %s", model.__name__,
                      str(exc)[:300])
    return found


def _silence_values(silence: Silence) -> dict[str, Any]:
    return {"id": silence.id, "starts_at": silence.starts_at, "ends_at": silence.ends_at,
            "created_at": silence.created_at, "data": silence.model_dump(mode="json")}


def _expired(silence: Silence, at: datetime) -> Silence:
    """``silence`` ending at ``at``. One that had not started by then keeps a window of 1 µs
    before ``at`` (ends_at must follow starts_at), so it never silences anything."""
    starts_at = min(silence.starts_at, at - timedelta(microseconds=1))
    return Silence.model_validate({**silence.model_dump(), "starts_at": starts_at,
                                   "ends_at": at})
