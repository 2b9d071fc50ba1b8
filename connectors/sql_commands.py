"""Commands and the audit log in the SQL store.

A command is one row: its :class:`CommandRecord` as JSON next to the columns that are filtered
on. Records move by compare-and-set on the stored status (:meth:`CommandStore.update_command`),
so two writers racing on one command (an agent report and the expiry sweep) apply once.

The audit log is append-only and hash-chained (``schemas.audit``): record ``seq`` (1, 2, 3…
without gaps) keeps the exact canonical text of its event in ``body`` (Text, never JSONB, which
would reorder keys) and ``hash = chain_hash(prev_hash, body)``. Appenders are serialised, so the
chain has one tail; an event whose id is stored already is skipped (redelivery).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import (
    ColumnElement,
    Index,
    String,
    Text,
    UniqueConstraint,
    and_,
    func,
    insert,
    or_,
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
    lock_writers,
)
from schemas.audit import (
    GENESIS,
    AuditEvent,
    ChainProblem,
    StoredAudit,
    canonical,
    chain_hash,
    verify_chain,
)
from schemas.commands import CommandRecord, CommandStatus

log = logging.getLogger(__name__)

#: pg_advisory_xact_lock key held while appending to the audit log ("FD" 0002)
AUDIT_LOCK = 0x46440002
#: records read per query by :meth:`CommandStore.verify_audit`
VERIFY_PAGE = 1000
#: event ids looked up per query for the redelivery check (bound-parameter limits)
_ID_CHUNK = 1000
#: statuses that end when ``expires_at`` passes, and those that end when ``deadline_at`` does
_WAITING = (str(CommandStatus.QUEUED), str(CommandStatus.PENDING_APPROVAL))
_STARTED = (str(CommandStatus.ACKED), str(CommandStatus.RUNNING))
#: the audit columns that copy a body field (verify_chain checks they still agree)
_AUDIT_COLUMNS = ("tenant", "actor", "action", "target")
#: the command columns update_command rewrites (id, tenant, server and creation never change)
_MOVABLE = ("status", "type", "actor", "data", "updated_at", "expires_at", "deadline_at")


@dataclass(frozen=True)
class AuditEntry:
    """One audit record as listed: its place in the chain and the event."""

    seq: int
    hash: str
    event: AuditEvent


# --- schema (created and changed only by connectors/migrations) -----------------------------

class CommandRow(Base):
    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_tenant_server_created", "tenant", "server_id", "created_at"),
        Index("ix_commands_tenant_created", "tenant", "created_at"),
        Index("ix_commands_status_expires", "status", "expires_at"),
        Index("ix_commands_status_deadline", "status", "deadline_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    server_id: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deadline_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(Json)


class AuditRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        UniqueConstraint("event_id", name="uq_audit_log_event_id"),
        Index("ix_audit_log_tenant_seq", "tenant", "seq"),
        Index("ix_audit_log_tenant_actor", "tenant", "actor", "seq"),
        Index("ix_audit_log_tenant_action", "tenant", "action", "seq"),
        Index("ix_audit_log_tenant_target", "tenant", "target", "seq"),
    )

    seq: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)


# --- the methods -------------------------------------------------------------------------------

class CommandStore(StoreBase):
    """Command records and the audit log (part of ``SQLStore``)."""

    # commands

    async def create_command(self, record: CommandRecord) -> None:
        """Store a new command; SQLError if its id exists already."""
        await self._insert_once("create command", CommandRow, _command_values(record, None),
                                f"command {record.command.id}")

    async def get_command(self, command_id: str,
                          tenant: str | None = None) -> CommandRecord | None:
        """The command, or None if unknown (or, with ``tenant``, of another tenant)."""
        query = select(CommandRow.data).where(CommandRow.id == command_id)
        if tenant is not None:
            query = query.where(CommandRow.tenant == tenant)
        data = await self._scalar("get command", query)
        return None if data is None else _load(CommandRecord, data)

    async def get_commands(self, command_ids: Sequence[str]) -> dict[str, CommandRecord]:
        """The stored commands among ``command_ids`` (unknown ids are left out), one query."""
        if not command_ids:
            return {}
        query = select(CommandRow.data).where(CommandRow.id.in_(list(command_ids)))
        records = _load_valid(CommandRecord, await self._scalars("get commands", query))
        return {r.command.id: r for r in records}

    async def change_commands(
            self, command_ids: Sequence[str],
            plan: Callable[[dict[str, CommandRecord]],
                           Sequence[tuple[CommandRecord, str, datetime | None]]],
    ) -> tuple[dict[str, CommandRecord], list[bool]]:
        """Read the stored commands among ``command_ids``, let ``plan`` (plain logic, no I/O:
        on SQLite it runs on the writer thread) turn them into changes (record,
        expect_status, deadline_at), and compare-and-set those, in one round trip to the
        database (one write lock per batch). The read is not locked; the compare-and-set on
        the status is what keeps a change that raced another writer out. Returns the records
        read and, per change, whether it was stored."""
        if not command_ids:
            return {}, []
        query = select(CommandRow.data).where(CommandRow.id.in_(list(command_ids)))

        def work(conn: Connection) -> tuple[dict[str, CommandRecord], list[bool]]:
            records = _load_valid(CommandRecord, conn.execute(query).scalars())
            stored = {r.command.id: r for r in records}
            return stored, [bool(conn.execute(self._cas(*change)).rowcount)
                            for change in plan(stored)]

        return await self._write("change commands", work)

    def _cas(self, record: CommandRecord, expect_status: str,
             deadline_at: datetime | None) -> Any:
        cmd = record.command
        values = _command_values(record, deadline_at)
        return (update(CommandRow)
                .where(CommandRow.id == cmd.id, CommandRow.status == str(expect_status),
                       CommandRow.tenant == cmd.tenant, CommandRow.server_id == cmd.server_id)
                .values({k: values[k] for k in _MOVABLE}))

    async def list_commands(self, tenant: str, *, server_id: str | None = None,
                            statuses: Sequence[str] | None = None, limit: int = 100,
                            before: datetime | None = None) -> list[CommandRecord]:
        """The tenant's commands created before ``before`` (if given), newest first; None =
        no filter. A stored record that no longer validates is logged and left out."""
        query = (select(CommandRow.data).where(CommandRow.tenant == tenant)
                 .order_by(CommandRow.created_at.desc(), CommandRow.id.desc()).limit(limit))
        if server_id is not None:
            query = query.where(CommandRow.server_id == server_id)
        if statuses is not None:
            query = query.where(CommandRow.status.in_([str(s) for s in statuses]))
        if before is not None:
            query = query.where(CommandRow.created_at < before)
        return _load_valid(CommandRecord, await self._scalars("list commands", query))

    async def update_command(self, record: CommandRecord, *, expect_status: str,
                             deadline_at: datetime | None = None) -> bool:
        """Compare-and-set: store ``record`` (status, type, actor, data, updated_at,
        expires_at and ``deadline_at``, None clearing it) only if the stored status is still
        ``expect_status``. False when it is not (re-read and retry), or when no command with
        this id, tenant and server is stored.

        ``expires_at`` is rewritten too: an approval re-issues the command with a new expiry,
        which :meth:`due_commands` must see.
        """
        return bool(await self._execute("update command",
                                        self._cas(record, expect_status, deadline_at)))

    async def due_commands(self, now: datetime, limit: int = 500) -> list[CommandRecord]:
        """Overdue commands, oldest (created) first, at most ``limit``: queued or
        pending-approval with ``expires_at <= now``, or acked or running with
        ``deadline_at <= now``."""
        overdue = or_(and_(CommandRow.status.in_(_WAITING), CommandRow.expires_at <= now),
                      and_(CommandRow.status.in_(_STARTED), CommandRow.deadline_at <= now))
        query = (select(CommandRow.data).where(overdue)
                 .order_by(CommandRow.created_at, CommandRow.id).limit(limit))
        return _load_valid(CommandRecord, await self._scalars("due commands", query))

    # audit log

    async def append_audit(self, events: Sequence[AuditEvent]) -> int:
        """Append ``events`` in order, in one transaction; how many were appended. An event
        whose id is stored already (or repeated in ``events``) is skipped."""
        if not events:
            return 0

        def work(conn: Connection) -> int:
            lock_writers(conn, AUDIT_LOCK)  # one tail: appenders go one at a time
            fresh = _unseen(conn, events)
            if fresh:
                last = conn.execute(select(AuditRow.seq, AuditRow.hash)
                                    .order_by(AuditRow.seq.desc()).limit(1)).first()
                seq, prev = (0, GENESIS) if last is None else (int(last[0]), str(last[1]))
                conn.execute(insert(AuditRow), _chained(fresh, seq, prev))
            return len(fresh)

        return await self._write("append audit", work)

    async def list_audit(self, tenant: str | None, *, actor: str | None = None,
                         action: str | None = None, target: str | None = None,
                         since: datetime | None = None, until: datetime | None = None,
                         before_seq: int | None = None, limit: int = 100) -> list[AuditEntry]:
        """Audit records, newest (highest seq) first; None = no filter, and ``tenant`` None
        means every tenant. ``action`` is exact, or a prefix when it ends with ``.`` or ``*``
        (``command.*`` and ``command.`` both match ``command.create``). Times are half-open:
        ``since <= ts < until``. ``before_seq`` pages on: records with a lower seq.

        A record whose body no longer reads as an event is logged and left out (``fleetdeck
        audit verify`` names it)."""
        a = AuditRow
        query = select(a.seq, a.hash, a.body).order_by(a.seq.desc()).limit(limit)
        for column, value in ((a.tenant, tenant), (a.actor, actor), (a.target, target)):
            if value is not None:
                query = query.where(column == value)
        if action is not None:
            query = query.where(_action_matches(action))
        if since is not None:
            query = query.where(a.ts >= since)
        if until is not None:
            query = query.where(a.ts < until)
        if before_seq is not None:
            query = query.where(a.seq < before_seq)
        return _entries(await self._rows("list audit", query))

    async def audit_chain(self, after_seq: int = 0, limit: int = 1000) -> list[StoredAudit]:
        """Stored records with ``seq > after_seq``, in seq order, as :func:`verify_chain`
        reads them (with the filter columns, so an edited column is found too)."""
        a = AuditRow
        query = (select(a.seq, a.prev_hash, a.hash, a.body, a.event_id,
                        *(a.__table__.c[name] for name in _AUDIT_COLUMNS))
                 .where(a.seq > after_seq).order_by(a.seq).limit(limit))
        return [StoredAudit(seq, prev, digest, body, event_id,
                            tuple(zip(_AUDIT_COLUMNS, columns, strict=True)))
                for seq, prev, digest, body, event_id, *columns
                in await self._rows("audit chain", query)]

    async def verify_audit(self, progress: Callable[[int], None] | None = None,
                           ) -> tuple[int, list[ChainProblem]]:
        """Walk the whole chain, a page at a time: (records checked, every problem found).
        ``progress`` is called with the running count after each page.

        Records deleted from the end of the log leave no break behind; compare the count
        (or the last hash) with one written down earlier to notice those."""
        checked, problems = 0, []
        seq, prev = 0, GENESIS
        while page := await self.audit_chain(after_seq=seq, limit=VERIFY_PAGE):
            problems += verify_chain(page, start_seq=seq + 1, start_hash=prev)
            seq, prev = page[-1].seq, page[-1].hash
            checked += len(page)
            if progress is not None:
                progress(checked)
        return checked, problems


def _command_values(record: CommandRecord, deadline_at: datetime | None) -> dict[str, Any]:
    cmd = record.command
    return {"id": cmd.id, "tenant": cmd.tenant, "server_id": cmd.server_id, "type": cmd.type,
            "status": str(record.status), "actor": cmd.actor, "created_at": record.created_at,
            "updated_at": record.updated_at, "expires_at": cmd.expires_at,
            "deadline_at": deadline_at, "data": record.model_dump(mode="json")}


def _unseen(conn: Connection, events: Sequence[AuditEvent]) -> list[AuditEvent]:
    """``events`` without those stored already and without repeats, in order."""
    unique = list({event.id: event for event in reversed(events)}.values())[::-1]
    ids = [event.id for event in unique]
    stored: set[str] = set()
    for start in range(0, len(ids), _ID_CHUNK):
        found = conn.execute(select(AuditRow.event_id)
                                   .where(AuditRow.event_id.in_(ids[start:start + _ID_CHUNK])))
        stored.update(found.scalars())
    return [event for event in unique if event.id not in stored]


def _chained(events: Sequence[AuditEvent], seq: int, prev: str) -> list[dict[str, Any]]:
    """The rows for ``events``, numbered and chained on from record ``seq`` with hash ``prev``."""
    rows = []
    for event in events:
        body = canonical(event)
        seq, digest = seq + 1, chain_hash(prev, body)
        rows.append({"seq": seq, "event_id": event.id, "tenant": event.tenant,
                     "actor": event.actor, "action": event.action, "target": event.target,
                     "ts": event.ts, "prev_hash": prev, "hash": digest, "body": body})
        prev = digest
    return rows


def _action_matches(action: str) -> ColumnElement[bool]:
    """The action filter: exact, or a prefix when it ends with ``.`` or ``*``. A prefix is
    compared with substr() rather than LIKE, which ignores case on SQLite and needs escaping."""
    if not action.endswith((".", "*")):
        return AuditRow.action == action
    prefix = action.rstrip("*")
    return func.substr(AuditRow.action, 1, len(prefix)) == prefix


def _entries(rows: Sequence[Any]) -> list[AuditEntry]:
    entries = []
    for seq, digest, body in rows:
        try:
            entries.append(AuditEntry(seq, digest, AuditEvent.model_validate_json(body)))
        except ValidationError as exc:
            log.error("skipping audit record %s, which no longer reads as an event: %s", seq,
                      str(exc)[:300])
    return entries


__all__ = ["AuditEntry", "AuditRow", "CommandRow", "CommandStore"]
