"""How a command's record moves with what its agent reports, and when the control plane gives
up on it. Plain functions of (record, event, now); the worker does the I/O.

The UI owns ``pending-approval`` (approve → ``queued``, reject → ``rejected``); from ``queued``
on, only agent reports and the clock move a record:

    queued ──acked──► acked ──running/progress──► running ──► succeeded | failed | timed-out
       │                 └────────────── succeeded | failed | timed-out ─────┘
       ├──rejected (by the agent, with its reason)
       └──expired (no ACK before the command's expiry)
    acked/running ──timed-out (no result by acked + timeout + grace)

Repeats, and reports that do not fit, change nothing, with one exception kept for the record:
an agent's rejection of a command that is no longer queued (a second delivery, refused as a
replay, of a command that runs once) is added to the history without changing the status.
A rejection may come from another agent of the same tenant (a command delivered to the wrong
server is refused by it as "bound to another server"); every other report must come from the
server the command is bound to.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from schemas.commands import CommandEvent, CommandRecord, CommandStatus, EventKind

#: time allowed, beyond the command's own timeout, for its result to arrive
RESULT_GRACE = timedelta(seconds=5)

S = CommandStatus
_OPEN = (S.QUEUED, S.ACKED, S.RUNNING)
_TARGET = {
    EventKind.ACKED: S.ACKED, EventKind.RUNNING: S.RUNNING, EventKind.PROGRESS: S.RUNNING,
    EventKind.SUCCEEDED: S.SUCCEEDED, EventKind.FAILED: S.FAILED,
    EventKind.TIMED_OUT: S.TIMED_OUT, EventKind.REJECTED: S.REJECTED,
}
_ALLOWED_FROM = {
    S.ACKED: (S.QUEUED,),
    S.RUNNING: (S.QUEUED, S.ACKED, S.RUNNING),
    S.SUCCEEDED: _OPEN, S.FAILED: _OPEN, S.TIMED_OUT: _OPEN,
    S.REJECTED: (S.QUEUED,),
}


def deadline(record: CommandRecord, acked_at: datetime) -> datetime:
    """When an ACKed command that has sent no result is declared timed out."""
    return acked_at + timedelta(seconds=record.command.timeout_s) + RESULT_GRACE


def apply(record: CommandRecord, event: CommandEvent, now: datetime) -> CommandRecord | None:
    """The record after ``event``, or None when the event changes nothing."""
    if event.tenant != record.command.tenant:
        return None
    if event.server_id != record.command.server_id and event.kind != EventKind.REJECTED:
        return None  # not from the agent the command was sent to
    target = _TARGET[event.kind]
    if target == S.REJECTED and record.status != S.QUEUED:
        return _refused_delivery(record, event, now)
    if record.status not in _ALLOWED_FROM[target]:
        return None
    if target == S.RUNNING and record.status == S.RUNNING:
        if event.kind != EventKind.PROGRESS or event.progress == record.progress:
            return None
        return record.model_copy(update={"progress": event.progress, "message": event.message,
                                         "updated_at": now})
    fields: dict[str, Any] = {}
    if record.acked_at is None and target != S.REJECTED:
        fields["acked_at"] = now  # a lost ACK: the first report proves the agent took it
    if target in (S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.REJECTED):
        fields.update(finished_at=now, result=event.result, result_ref=event.result_ref,
                      progress=1.0 if target == S.SUCCEEDED else record.progress)
    elif event.progress is not None:
        fields["progress"] = event.progress
    return record.moved(target, now, event.message, **fields)


def overdue(record: CommandRecord, now: datetime) -> CommandRecord | None:
    """The record given up on at ``now`` (expired or timed out), or None if it is not due."""
    if record.status in (S.QUEUED, S.PENDING_APPROVAL) and record.command.expires_at <= now:
        what = ("no approval" if record.status == S.PENDING_APPROVAL else "no ACK from the agent")
        return record.moved(S.EXPIRED, now, f"{what} before the command expired",
                            by="control-plane", finished_at=now)
    if record.status in (S.ACKED, S.RUNNING) and record.acked_at is not None \
            and deadline(record, record.acked_at) <= now:
        return record.moved(S.TIMED_OUT, now, f"no result within {record.command.timeout_s:g} s "
                            "of the ACK", by="control-plane", finished_at=now)
    return None


def _refused_delivery(record: CommandRecord, event: CommandEvent,
                      now: datetime) -> CommandRecord | None:
    """A later delivery refused by an agent: noted once per agent and reason, status kept."""
    note = {"status": "delivery-rejected", "at": now.isoformat(), "by": event.server_id,
            "message": event.message[:500]}
    if record.status == S.PENDING_APPROVAL or any(
            h.get("status") == note["status"] and h.get("by") == note["by"]
            and h.get("message") == note["message"] for h in record.history):
        return None
    return record.model_copy(update={"history": [*record.history, note][-64:],
                                     "updated_at": now})
