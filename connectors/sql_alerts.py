"""Alerting in the SQL store: rules, silences, alerts (current state and history) and the
notification outbox.

Writes fed by Kafka are idempotent: an alert event is identified by ``(alert_id, seq)`` and a
notification by ``(alert_id, seq, receiver)``, so a redelivered message changes nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from connectors.sql_base import (
    Base,
    Json,
    RowId,
    StoreBase,
    UtcDateTime,
    _load,
    _load_valid,
)
from schemas.alerts import AlertEvent, AlertRule, Silence

log = logging.getLogger(__name__)

NOTIFICATION_STATES = ("pending", "sent", "failed")


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


# --- the methods -------------------------------------------------------------------------------

class AlertStore(StoreBase):
    """Alert rules, silences, alerts and the notification outbox (part of ``SQLStore``)."""

    # rules

    async def upsert_rule(self, rule: AlertRule) -> bool:
        """Store ``rule``: True if it is new, False if it replaced one with the same id."""
        values = {"id": rule.id, "kind": rule.kind, "severity": str(rule.severity),
                  "enabled": rule.enabled, "data": rule.model_dump(mode="json"),
                  "updated_at": datetime.now(UTC)}
        return await self._upsert("upsert rule", AlertRuleRow, values, ["id"])

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
        return bool(await self._execute("delete rule",
                                        delete(AlertRuleRow).where(AlertRuleRow.id == rule_id)))

    # silences

    async def add_silence(self, silence: Silence) -> None:
        await self._insert_once("add silence", SilenceRow, _silence_values(silence),
                                f"a silence with id {silence.id!r}")

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
        add = self._insert(AlertEventRow).values(common).on_conflict_do_nothing()
        stmt = self._insert(AlertRow).values(current)
        make_current = stmt.on_conflict_do_update(
            index_elements=[AlertRow.alert_id],
            set_={k: stmt.excluded[k] for k in current if k != "alert_id"},
            where=AlertRow.seq < stmt.excluded.seq)

        def work(conn: Connection) -> bool:
            if not conn.execute(add).rowcount:
                return False
            conn.execute(make_current)
            return True

        return await self._write("record alert event", work)

    async def list_alerts(self, *, tenant: str | None = None,
                          states: Sequence[str] | None = None,
                          severity: str | None = None, server_id: str | None = None,
                          rule_id: str | None = None, limit: int = 500) -> list[AlertEvent]:
        """Current alerts (each alert's newest event), newest first; None = no filter."""
        query = select(AlertRow.data).order_by(AlertRow.ts.desc(), AlertRow.alert_id).limit(limit)
        if tenant is not None:
            query = query.where(AlertRow.tenant == tenant)
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
        return await self._insert_new("enqueue notification", NotificationRow, values)

    async def due_notifications(self, at: datetime, limit: int = 100) -> list[Notification]:
        """Pending deliveries whose time has come by ``at``, oldest first."""
        n = NotificationRow
        query = (select(n.id, n.alert_id, n.seq, n.receiver, n.payload, n.attempts,
                        n.next_attempt_at, n.last_error)
                 .where(n.state == "pending", n.next_attempt_at <= at)
                 .order_by(n.next_attempt_at, n.id).limit(limit))
        return [Notification(*row) for row in await self._rows("due notifications", query)]

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
        rows = await self._rows("notification counts", query)
        found = {state: int(count) for state, count in rows}
        return {state: found.get(state, 0) for state in NOTIFICATION_STATES}

    async def _update_pending(self, what: str, notification_id: int, **values: Any) -> None:
        """Update a notification still pending (a late report about a settled one is dropped)."""
        changed = await self._execute(
            what, update(NotificationRow)
            .where(NotificationRow.id == notification_id, NotificationRow.state == "pending")
            .values(**values))
        if not changed:
            log.warning("%s: notification %s is not pending; ignored", what, notification_id)


def _silence_values(silence: Silence) -> dict[str, Any]:
    return {"id": silence.id, "starts_at": silence.starts_at, "ends_at": silence.ends_at,
            "created_at": silence.created_at, "data": silence.model_dump(mode="json")}


def _expired(silence: Silence, at: datetime) -> Silence:
    """``silence`` ending at ``at``. One that had not started by then keeps a window of 1 µs
    before ``at`` (ends_at must follow starts_at), so it never silences anything."""
    starts_at = min(silence.starts_at, at - timedelta(microseconds=1))
    return Silence.model_validate({**silence.model_dump(), "starts_at": starts_at,
                                   "ends_at": at})

