"""The control role's command tracker: agent reports → SQL record → live stream.

Every record change is a compare-and-set on the stored status, so two deliveries of one report,
or a report racing the expiry sweep, apply once. Each change is published to the commands
stream in Redis (what the commands pages and ``fleetdeck bench dispatch`` watch).

When a command ends (succeeded, failed, rejected, expired, timed out) the tracker appends a
``command.finished`` audit event: the requester's reason and approval trace, what the handler
reported it found before (``before`` in its result) and what it left (the keys of
:data:`AUDITED_RESULT_KEYS`); never file contents or other bulk output.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from connectors.redis_live import LiveEvent, LiveStreamError, LiveStreams
from connectors.sql import SQLError, SQLStore
from schemas.audit import AuditEvent
from schemas.commands import CommandEvent, CommandRecord, CommandStatus
from schemas.envelope import utcnow
from streams.commands import logic

log = logging.getLogger(__name__)

STREAM_MAXLEN = 20_000

#: result keys copied into a finished command's audit record (what it changed, not contents)
AUDITED_RESULT_KEYS = ("path", "destination", "entry_id", "line", "size", "sha256", "created",
                       "written", "removed", "dry_run", "permanent", "trash_id", "complete")

#: append(key, audit event JSON) to the audit topic
AuditAppend = Callable[[str, bytes], Awaitable[None]]


def finished_audit(record: CommandRecord) -> AuditEvent:
    """The audit event of a command that reached a final status."""
    cmd = record.command
    result = record.result or {}
    before: Any = result.get("before")
    if before is not None and not isinstance(before, dict):
        before = {"value": before}
    after: dict[str, Any] = {"status": str(record.status), "type": cmd.type,
                             "server_id": cmd.server_id, "message": record.message[:500]}
    after.update({k: result[k] for k in AUDITED_RESULT_KEYS if k in result})
    if record.result_ref:
        after["result_ref"] = record.result_ref
    by_agent = record.status in (CommandStatus.SUCCEEDED, CommandStatus.FAILED,
                                 CommandStatus.REJECTED)
    return AuditEvent(tenant=cmd.tenant, actor=f"agent:{cmd.server_id}" if by_agent
                      else "fleetdeck:control", action="command.finished",
                      target=f"command:{cmd.id}", reason=cmd.reason, approvals=cmd.approvals,
                      before=before, after=after, outcome=str(record.status))


def live_event(keys_stream: str, record: CommandRecord) -> LiveEvent:
    return LiveEvent(keys_stream, "command", json.dumps(record.summary()), STREAM_MAXLEN)


class CommandTracker:
    def __init__(self, sql: SQLStore, live: LiveStreams,
                 audit: AuditAppend | None = None) -> None:
        self.sql = sql
        self.live = live
        self.audit = audit
        self.ignored = 0

    async def handle(self, raw_events: list[bytes | None]) -> int:
        """Apply a batch of agent reports; returns how many were unreadable (skipped).
        SQLError (database unreachable) propagates: the batch comes again.

        The reports of one command in a batch (an ACK with its running and result, say) are
        applied together, and the batch's commands are read and written by compare-and-set in
        one round trip to the store (one write lock per batch: SQLite's busy handler sleeps
        up to 100 ms per retry when the UI and the workers take turns at the lock).
        A command whose compare-and-set fails (moved by someone else meanwhile) is read and
        applied again on its own. Every step is published, in order, once the write holding
        it has succeeded."""
        by_command: dict[str, list[CommandEvent]] = {}
        bad = 0
        for raw in raw_events:
            try:
                event = CommandEvent.model_validate_json(raw or b"")
            except ValueError as exc:
                log.warning("ignoring an invalid command event: %s", str(exc)[:300])
                bad += 1
                continue
            by_command.setdefault(event.command_id, []).append(event)
        changed: list[CommandRecord] = []
        planned: list[tuple[CommandRecord, list[CommandRecord]]] = []

        def plan(stored: dict[str, CommandRecord]
                 ) -> list[tuple[CommandRecord, str, datetime | None]]:
            planned.clear()  # (plain logic: on SQLite this runs on the store's writer thread)
            for command_id, events in by_command.items():
                record = stored.get(command_id)
                if record is not None:
                    steps = self._steps(record, events)
                    if steps:
                        planned.append((record, steps))
            return [(steps[-1], str(old.status), self._deadline(steps[-1]))
                    for old, steps in planned]

        stored, written = await self.sql.change_commands(list(by_command), plan)
        # not ours (forged, or from a wiped store)
        self.ignored += sum(len(e) for i, e in by_command.items() if i not in stored)
        for (old, steps), ok in zip(planned, written, strict=True):
            if ok:
                changed.extend(steps)
            else:
                changed.extend(await self._apply(old.command.id, by_command[old.command.id]))
        await self._publish(changed)
        return bad

    async def sweep(self, now: datetime | None = None) -> int:
        """Expire or time out overdue commands; returns how many changed."""
        now = now or utcnow()
        changed = []
        for record in await self.sql.due_commands(now):
            updated = logic.overdue(record, now)
            if updated is not None and await self._store(record, updated):
                changed.append(updated)
        await self._publish(changed)
        return len(changed)

    async def _apply(self, command_id: str, events: list[CommandEvent]) -> list[CommandRecord]:
        """The record after each of ``events`` that changed it (stored: the last of them)."""
        for _ in range(5):  # compare-and-set: re-read when someone else moved it first
            record = await self.sql.get_command(command_id)
            if record is None:
                self.ignored += len(events)  # not ours (forged or from a wiped store)
                return []
            steps = self._steps(record, events)
            if not steps or await self._store(record, steps[-1]):
                return steps
        log.warning("command %s kept changing under us; reports %s dropped", command_id,
                    ", ".join(str(e.kind) for e in events))
        return []

    @staticmethod
    def _steps(record: CommandRecord, events: list[CommandEvent]) -> list[CommandRecord]:
        """The record after each of ``events`` that changes it."""
        steps: list[CommandRecord] = []
        for event in events:
            updated = logic.apply(steps[-1] if steps else record, event, utcnow())
            if updated is not None:
                steps.append(updated)
        return steps

    @staticmethod
    def _deadline(new: CommandRecord) -> datetime | None:
        if new.status in (CommandStatus.ACKED, CommandStatus.RUNNING) and new.acked_at:
            return logic.deadline(new, new.acked_at)
        return None

    async def _store(self, old: CommandRecord, new: CommandRecord) -> bool:
        try:
            return await self.sql.update_command(new, expect_status=str(old.status),
                                                 deadline_at=self._deadline(new))
        except SQLError as exc:
            if exc.unreachable:
                raise
            log.error("command %s could not be stored: %s", new.command.id, exc)
            return False

    @staticmethod
    async def _audit_finished(audit: AuditAppend, record: CommandRecord) -> None:
        """Put the command.finished event on the audit topic, again and again until the
        broker takes it: the SQL change is committed, so a redelivered batch would not
        produce it a second time (and it holds what a permanent delete removed)."""
        event = finished_audit(record)
        delay = 0.5
        while True:
            try:
                await audit(event.tenant, event.model_dump_json().encode())
                return
            except Exception as exc:
                log.error("cannot audit command %s, retrying in %.1f s: %r",
                          record.command.id, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _publish(self, records: list[CommandRecord]) -> None:
        if not records:
            return
        if self.audit is not None:
            for record in records:
                if record.final:
                    await self._audit_finished(self.audit, record)
        stream = self.live.keys.commands_stream
        try:
            await self.live.publish([live_event(stream, r) for r in records])
        except LiveStreamError as exc:  # the SQL record is the truth; the live view catches up
            log.warning("cannot publish command changes: %s", exc)
