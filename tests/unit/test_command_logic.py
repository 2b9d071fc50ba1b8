"""How agent reports and the clock move a command's record (streams/commands/logic.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.commands import (
    Command,
    CommandEvent,
    CommandRecord,
    CommandStatus,
    EventKind,
    PingParams,
)
from streams.commands.logic import RESULT_GRACE, apply, overdue

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
S = CommandStatus


def record(status: S = S.QUEUED, **changes: Any) -> CommandRecord:
    cmd = Command(tenant="acme", server_id="web-1", type="PING", params=PingParams(),
                  actor="alice", reason="checking", issued_at=T0,
                  expires_at=T0 + timedelta(seconds=60), timeout_s=10)
    return CommandRecord(command=cmd, status=status, created_at=T0, updated_at=T0, **changes)


def event(kind: EventKind, rec: CommandRecord, **changes: Any) -> CommandEvent:
    fields: dict[str, Any] = {"tenant": "acme", "server_id": "web-1",
                              "command_id": rec.command.id, "kind": kind, **changes}
    return CommandEvent(**fields)


def run(rec: CommandRecord, *kinds: EventKind) -> CommandRecord:
    for i, kind in enumerate(kinds):
        nxt = apply(rec, event(kind, rec), T0 + timedelta(seconds=i + 1))
        if nxt is not None:
            rec = nxt
    return rec


def test_the_happy_path_records_ack_time_result_and_history() -> None:
    rec = record()
    acked = apply(rec, event(EventKind.ACKED, rec), T0 + timedelta(milliseconds=40))
    assert acked is not None and acked.status == S.ACKED
    assert acked.acked_at == T0 + timedelta(milliseconds=40)
    done = apply(run(acked, EventKind.RUNNING), event(EventKind.SUCCEEDED, rec,
                                                      result={"pong": "x"}), T0 + timedelta(2))
    assert done is not None and done.status == S.SUCCEEDED and done.result == {"pong": "x"}
    assert [h["status"] for h in done.history] == ["acked", "running", "succeeded"]
    assert done.finished_at is not None and done.final


def test_repeats_and_reports_after_the_end_change_nothing() -> None:
    rec = run(record(), EventKind.ACKED)
    assert apply(rec, event(EventKind.ACKED, rec), T0) is None
    done = run(rec, EventKind.SUCCEEDED)
    for kind in EventKind:
        if kind != EventKind.REJECTED:
            assert apply(done, event(kind, done), T0 + timedelta(hours=1)) is None


def test_a_replay_rejection_is_noted_once_without_changing_the_status() -> None:
    rec = run(record(), EventKind.ACKED, EventKind.RUNNING)
    noted = apply(rec, event(EventKind.REJECTED, rec, message="replayed"), T0)
    assert noted is not None and noted.status == S.RUNNING
    assert noted.history[-1]["status"] == "delivery-rejected"
    assert noted.history[-1]["message"] == "replayed"
    assert apply(noted, event(EventKind.REJECTED, rec, message="replayed"), T0) is None


def test_another_agent_of_the_tenant_may_reject_a_misrouted_command() -> None:
    rec = record()
    rejected = apply(rec, event(EventKind.REJECTED, rec, server_id="web-2",
                                message="bound to server 'web-1', not 'web-2'"), T0)
    assert rejected is not None and rejected.status == S.REJECTED
    assert "bound to server" in rejected.message


def test_agent_rejection_keeps_the_reason() -> None:
    rec = record()
    rejected = apply(rec, event(EventKind.REJECTED, rec, message="bad signature"), T0)
    assert rejected is not None and rejected.status == S.REJECTED
    assert rejected.message == "bad signature" and rejected.acked_at is None


def test_reports_from_another_server_or_tenant_are_ignored() -> None:
    rec = record()
    assert apply(rec, event(EventKind.ACKED, rec, server_id="web-2"), T0) is None
    assert apply(rec, event(EventKind.SUCCEEDED, rec, tenant="evil"), T0) is None
    assert apply(rec, event(EventKind.REJECTED, rec, tenant="evil"), T0) is None


def test_a_result_without_an_ack_counts_as_acked() -> None:
    rec = record()
    done = apply(rec, event(EventKind.SUCCEEDED, rec), T0 + timedelta(seconds=1))
    assert done is not None and done.status == S.SUCCEEDED
    assert done.acked_at == T0 + timedelta(seconds=1)


def test_progress_updates_a_running_record_in_place() -> None:
    rec = run(record(), EventKind.ACKED, EventKind.RUNNING)
    half = apply(rec, event(EventKind.PROGRESS, rec, progress=0.5, message="half"), T0)
    assert half is not None and half.progress == 0.5 and half.status == S.RUNNING
    assert len(half.history) == len(rec.history)


def test_overdue_commands_expire_or_time_out() -> None:
    queued = record()
    assert overdue(queued, T0 + timedelta(seconds=59)) is None
    expired = overdue(queued, T0 + timedelta(seconds=60))
    assert expired is not None and expired.status == S.EXPIRED
    assert "no ACK" in expired.message
    waiting = record(S.PENDING_APPROVAL)
    lapsed = overdue(waiting, T0 + timedelta(seconds=61))
    assert lapsed is not None and lapsed.status == S.EXPIRED and "approval" in lapsed.message
    acked = run(record(), EventKind.ACKED)  # acked at T0 + 1 s, timeout 10 s
    limit = T0 + timedelta(seconds=11) + RESULT_GRACE
    assert overdue(acked, limit - timedelta(milliseconds=1)) is None
    timed_out = overdue(acked, limit)
    assert timed_out is not None and timed_out.status == S.TIMED_OUT
    assert overdue(run(acked, EventKind.SUCCEEDED), limit + timedelta(hours=1)) is None


def test_a_finished_command_is_audited_with_before_and_after_but_no_contents() -> None:
    from streams.commands.worker import finished_audit

    base = record()
    done = base.moved(CommandStatus.SUCCEEDED, base.created_at, "written", result={
        "path": "/srv/app.conf", "size": 12, "sha256": "ab" * 32, "content": "secret",
        "before": {"size": 3, "sha256": "cd" * 32}})
    event = finished_audit(done)
    assert event.action == "command.finished" and event.outcome == "succeeded"
    assert event.actor == f"agent:{base.command.server_id}"
    assert event.reason == base.command.reason
    assert event.before == {"size": 3, "sha256": "cd" * 32}
    assert event.after is not None and event.after["path"] == "/srv/app.conf"
    assert "content" not in event.after
    cron = base.moved(CommandStatus.SUCCEEDED, base.created_at, "ok",
                      result={"line": "5 * * * * nobody /bin/true", "before": None})
    assert finished_audit(cron).before is None
    replaced = base.moved(CommandStatus.SUCCEEDED, base.created_at, "ok",
                          result={"line": "new", "before": "old line"})
    assert finished_audit(replaced).before == {"value": "old line"}
    expired = base.moved(CommandStatus.EXPIRED, base.created_at, "no ACK")
    assert finished_audit(expired).actor == "fleetdeck:control"
