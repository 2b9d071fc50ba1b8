"""The agent's gate and executor: signature, binding, expiry, replay, ACK-then-run, timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from agent.executor import (
    RESULTS_KEEP_FILES,
    RESULTS_KEEP_S,
    Executor,
    Rejected,
    ReplayGuard,
    check,
    store_result,
)
from agent.ops import OpsError
from connectors.keystore import key_id, load_or_create, load_public
from schemas.commands import (
    COMMAND_TYPES,
    Command,
    CommandEvent,
    EventKind,
    PingParams,
    SignedCommand,
    policy_types,
)

KEY = Ed25519PrivateKey.generate()
KID = key_id(KEY.public_key())
KEYS = {KID: KEY.public_key()}
NOW = datetime.now(UTC)


def command(**changes: Any) -> Command:
    fields: dict[str, Any] = {
        "tenant": "acme", "server_id": "web-1", "type": "PING", "params": PingParams(),
        "actor": "alice", "reason": "checking the agent", "issued_at": NOW,
        "expires_at": NOW + timedelta(minutes=1)}
    fields.update(changes)
    return Command(**fields)


def signed(cmd: Command | None = None, key: Ed25519PrivateKey = KEY) -> SignedCommand:
    return SignedCommand.sign(cmd or command(), key, key_id(key.public_key()) if key is not KEY
                              else KID)


def gate(msg: SignedCommand, replay: ReplayGuard | None = None, **where: Any) -> Command:
    kw = {"tenant": "acme", "server_id": "web-1", "now": NOW, **where}
    return check(msg, KEYS, replay=replay or ReplayGuard(None), **kw)


def test_a_signed_command_passes_and_round_trips() -> None:
    cmd = command(params=PingParams(payload="hi"))
    assert gate(signed(cmd)) == cmd


@pytest.mark.parametrize("where, reason", [
    ({"server_id": "web-2"}, "bound to server 'web-1', not 'web-2'"),
    ({"tenant": "other"}, "bound to tenant 'acme'"),
    ({"now": NOW + timedelta(minutes=2)}, "expired at"),
    ({"now": NOW - timedelta(minutes=6)}, "issued in the future"),
])
def test_commands_for_elsewhere_or_another_time_are_rejected(where: dict[str, Any],
                                                             reason: str) -> None:
    with pytest.raises(Rejected, match=reason.replace("(", r"\(")):
        gate(signed(), **where)


def test_a_changed_command_text_fails_the_signature() -> None:
    msg = signed()
    tampered = msg.command.replace('"web-1"', '"web-2"')
    with pytest.raises(Rejected, match="bad signature"):
        gate(msg.model_copy(update={"command": tampered}), server_id="web-2")


def test_a_command_signed_by_another_key_is_rejected() -> None:
    other = Ed25519PrivateKey.generate()
    forged = SignedCommand.sign(command(), other, KID)  # claims the real key id
    with pytest.raises(Rejected, match="bad signature"):
        gate(forged)
    with pytest.raises(Rejected, match="unknown key"):
        gate(signed(key=other))


def test_garbage_signature_is_rejected_not_crashing() -> None:
    msg = signed().model_copy(update={"signature": "!!!not base64"})
    with pytest.raises(Rejected, match="bad signature"):
        gate(msg)


def test_replay_is_remembered_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "seen.log"
    cmd = command()
    guard = ReplayGuard(path)
    gate(signed(cmd), guard)
    asyncio.run(guard.remember(cmd))
    with pytest.raises(Rejected, match="replayed"):
        gate(signed(cmd), guard)
    with pytest.raises(Rejected, match="replayed"):  # a new process reads the file
        gate(signed(cmd), ReplayGuard(path))


def test_replay_guard_forgets_ids_only_once_they_could_not_be_valid(tmp_path: Path) -> None:
    path = tmp_path / "seen.log"
    old = command(issued_at=NOW - timedelta(hours=2), expires_at=NOW - timedelta(hours=1))
    fresh = command()
    guard = ReplayGuard(path)
    asyncio.run(guard.remember(old))
    asyncio.run(guard.remember(fresh))
    reloaded = ReplayGuard(path)
    assert reloaded.seen(fresh.id) and not reloaded.seen(old.id)


def test_replay_guard_commits_a_burst_together_and_keeps_every_id(tmp_path: Path) -> None:
    path = tmp_path / "seen.log"
    guard = ReplayGuard(path)
    burst = [command() for _ in range(50)]

    async def accept_all() -> None:
        await asyncio.gather(*(guard.remember(c) for c in burst))

    asyncio.run(accept_all())
    assert guard._synced == 50 and not guard._buffer
    lines = path.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(c.id for c in burst)
    reloaded = ReplayGuard(path)
    assert all(reloaded.seen(c.id) for c in burst)


def test_replay_guard_writes_again_what_a_failed_write_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "seen.log"
    guard = ReplayGuard(path)
    first, second = command(), command()
    original = ReplayGuard._append
    fail = [True]

    def flaky(self: ReplayGuard, lines: list[str]) -> None:
        if fail.pop() if fail else False:
            raise OSError(28, "No space left on device")
        original(self, lines)

    monkeypatch.setattr(ReplayGuard, "_append", flaky)
    with pytest.raises(OSError):
        asyncio.run(guard.remember(first))
    asyncio.run(guard.remember(second))  # the next write carries the lost line too
    assert {line.split()[0] for line in path.read_text().splitlines()} == {first.id, second.id}


async def test_a_result_that_cannot_be_stored_still_ends_the_command(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the results directory should be")
    _cmd, last = await run_big(blocked)
    assert last.kind == "succeeded" and last.result == {"truncated": True, "stored": False}
    assert last.result_ref is None


def test_command_model_refuses_unknown_fields_and_bad_lifetimes() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        PingParams.model_validate({"type": "PING", "rm": "-rf"})
    with pytest.raises(ValidationError, match="expires_at must come after"):
        command(expires_at=NOW - timedelta(seconds=1))
    with pytest.raises(ValidationError, match="at most"):
        command(expires_at=NOW + timedelta(days=2))
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        Command.model_validate({**command().model_dump(), "params": {"type": "REBOOT"}})
    assert {"PING", "CRON_LIST", "CRON_CREATE", "CRON_UPDATE", "CRON_DELETE"} <= set(
        COMMAND_TYPES)


def test_keystore_creates_once_and_pins_by_pem(tmp_path: Path) -> None:
    first = load_or_create(tmp_path)
    again = load_or_create(tmp_path)
    assert first.key_id == again.key_id
    assert (tmp_path / "signing.key").stat().st_mode & 0o777 == 0o600
    pinned = load_public((tmp_path / "signing.pub").read_text())
    assert key_id(pinned) == first.key_id


class Recorder:
    def __init__(self) -> None:
        self.events: list[CommandEvent] = []

    async def __call__(self, event: CommandEvent) -> None:
        self.events.append(event)

    def kinds(self, command_id: str) -> list[str]:
        return [str(e.kind) for e in self.events if e.command_id == command_id]


async def run_one(executor: Executor, msg: SignedCommand, server_id: str = "web-1") -> None:
    await executor.receive(msg, tenant="acme", server_id=server_id)
    async with asyncio.timeout(5):
        await asyncio.gather(*executor.running.values())


async def test_executor_acks_before_running_and_reports_the_result() -> None:
    rec = Recorder()
    ex = Executor(KEYS, ReplayGuard(None), rec)
    cmd = command(issued_at=datetime.now(UTC), expires_at=datetime.now(UTC) + timedelta(minutes=1),
                  params=PingParams(payload="hello"))
    await run_one(ex, signed(cmd))
    assert rec.kinds(cmd.id) == ["acked", "running", "succeeded"]
    assert rec.events[-1].result is not None and rec.events[-1].result["pong"] == "hello"
    assert [e.agent_seq for e in rec.events] == [0, 1, 2]


class SlowDisk(ReplayGuard):
    """A replay guard whose disk write waits for ``written`` (or fails with ``error``)."""

    def __init__(self, error: OSError | None = None) -> None:
        super().__init__(None)
        self.written = asyncio.Event()
        self.error = error

    async def remember(self, command: Command) -> None:
        await super().remember(command)  # seen at once
        await self.written.wait()
        if self.error is not None:
            raise self.error


async def test_the_ack_does_not_wait_for_the_disk_but_the_run_does() -> None:
    rec = Recorder()
    guard = SlowDisk()
    ex = Executor(KEYS, guard, rec)
    cmd = command(issued_at=datetime.now(UTC), expires_at=datetime.now(UTC) + timedelta(minutes=1))
    receiving = asyncio.create_task(ex.receive(signed(cmd), tenant="acme", server_id="web-1"))
    async with asyncio.timeout(5):
        while not rec.events:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert rec.kinds(cmd.id) == ["acked"] and not ex.running  # not run before it is on disk
    await run_one(ex, signed(cmd))  # a second delivery meanwhile: refused, not run
    assert rec.kinds(cmd.id) == ["acked", "rejected"]
    guard.written.set()
    async with asyncio.timeout(5):
        await receiving
        await asyncio.gather(*ex.running.values())
    assert rec.kinds(cmd.id) == ["acked", "rejected", "running", "succeeded"]


async def test_a_command_the_agent_cannot_record_is_failed_not_run() -> None:
    rec = Recorder()
    guard = SlowDisk(OSError(28, "No space left on device"))
    guard.written.set()
    ex = Executor(KEYS, guard, rec)
    cmd = command(issued_at=datetime.now(UTC), expires_at=datetime.now(UTC) + timedelta(minutes=1))
    await run_one(ex, signed(cmd))
    assert rec.kinds(cmd.id) == ["acked", "failed"]
    assert "cannot record it as accepted" in rec.events[-1].message
    assert ex.counts["succeeded"] == 0 and ex.counts["failed"] == 1


class SlowLog(ReplayGuard):
    """A real replay log on disk whose writes take ``delay`` seconds (or fail)."""

    def __init__(self, path: Path, delay: float, fail: bool = False) -> None:
        super().__init__(path)
        self.delay = delay
        self.fail = fail

    def _append(self, lines: list[str]) -> None:
        time.sleep(self.delay)
        if self.fail:
            raise OSError(28, "No space left on device")
        super()._append(lines)


async def _cancel_after_ack(ex: Executor, rec: Recorder, cmd: Command) -> None:
    receiving = asyncio.create_task(ex.receive(signed(cmd), tenant="acme", server_id="web-1"))
    async with asyncio.timeout(5):
        while not rec.events:
            await asyncio.sleep(0.005)
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving


async def test_stopped_after_the_ack_once_the_id_is_on_disk_it_is_reported_not_run(
        tmp_path: Path) -> None:
    rec = Recorder()
    log = tmp_path / "accepted.log"
    ex = Executor(KEYS, SlowLog(log, 0.2), rec)
    cmd = command(issued_at=datetime.now(UTC), expires_at=datetime.now(UTC) + timedelta(minutes=1))
    await _cancel_after_ack(ex, rec, cmd)
    # the id reached the disk, so a redelivery would be refused: it must end now, not hang
    assert rec.kinds(cmd.id) == ["acked", "failed"] and not ex.running
    assert "stopped before running it" in rec.events[-1].message
    assert ReplayGuard(log).seen(cmd.id)


async def test_stopped_after_the_ack_before_the_id_is_on_disk_it_comes_again(
        tmp_path: Path) -> None:
    rec = Recorder()
    log = tmp_path / "accepted.log"
    ex = Executor(KEYS, SlowLog(log, 0.1, fail=True), rec)
    cmd = command(issued_at=datetime.now(UTC), expires_at=datetime.now(UTC) + timedelta(minutes=1))
    await _cancel_after_ack(ex, rec, cmd)
    assert rec.kinds(cmd.id) == ["acked"]  # nothing more: after a restart it runs
    after_restart = Executor(KEYS, ReplayGuard(log), rec)
    await run_one(after_restart, signed(cmd))
    assert rec.kinds(cmd.id) == ["acked", "acked", "running", "succeeded"]


async def test_a_second_delivery_is_rejected_not_run_again() -> None:
    rec = Recorder()
    ex = Executor(KEYS, ReplayGuard(None), rec)
    cmd = command(issued_at=datetime.now(UTC), expires_at=datetime.now(UTC) + timedelta(minutes=1))
    await run_one(ex, signed(cmd))
    await run_one(ex, signed(cmd))
    assert rec.kinds(cmd.id) == ["acked", "running", "succeeded", "rejected"]
    assert "replayed" in rec.events[-1].message
    assert ex.counts["succeeded"] == 1


async def test_a_rejection_is_reported_with_the_claimed_id_and_reason() -> None:
    rec = Recorder()
    ex = Executor(KEYS, ReplayGuard(None), rec)
    cmd = command(issued_at=datetime.now(UTC), expires_at=datetime.now(UTC) + timedelta(minutes=1))
    await run_one(ex, signed(cmd), server_id="db-9")
    [event] = rec.events
    assert (event.kind, event.command_id, event.server_id) == (EventKind.REJECTED, cmd.id, "db-9")
    assert "bound to server" in event.message
    await run_one(ex, SignedCommand(key_id=KID, command="{not json", signature="AAAA"))
    assert len(rec.events) == 1  # nothing to match a report to: logged and counted only
    assert ex.counts["rejected"] == 2


async def test_timeouts_failures_and_crashes_are_reported_and_survived() -> None:
    async def fails(_c: Command, _r: Any) -> dict[str, Any]:
        raise OpsError("disk full")

    async def crashes(_c: Command, _r: Any) -> dict[str, Any]:
        raise ZeroDivisionError

    async def slow(_c: Command, report: Any) -> dict[str, Any]:
        await report(0.5, "half way")
        await asyncio.sleep(10)
        return {}

    now = datetime.now(UTC)
    for handler, kind, message in [(fails, "failed", "disk full"),
                                   (crashes, "failed", "handler error: ZeroDivisionError"),
                                   (slow, "timed-out", "no result within 0.2 s")]:
        rec = Recorder()
        ex = Executor(KEYS, ReplayGuard(None), rec, handlers={"PING": handler})
        cmd = command(issued_at=now, expires_at=now + timedelta(minutes=1), timeout_s=0.2)
        await run_one(ex, signed(cmd))
        assert rec.kinds(cmd.id)[-1] == kind
        assert rec.events[-1].message == message
    assert "progress" in rec.kinds(cmd.id)


async def run_big(results_dir: Path) -> tuple[Command, CommandEvent]:
    """A command whose handler returns 100 KB; the command and its last report."""
    async def big(_c: Command, _r: Any) -> dict[str, Any]:
        return {"data": "x" * 100_000}

    rec = Recorder()
    ex = Executor(KEYS, ReplayGuard(None), rec, handlers={"PING": big}, results_dir=results_dir)
    now = datetime.now(UTC)
    cmd = command(issued_at=now, expires_at=now + timedelta(minutes=1))
    await run_one(ex, signed(cmd))
    return cmd, rec.events[-1]


async def test_large_results_are_stored_by_reference(tmp_path: Path) -> None:
    cmd, last = await run_big(tmp_path)
    assert last.result == {"truncated": True, "bytes": len(json.dumps({"data": "x" * 100_000}))}
    assert last.result_ref is not None and last.result_ref.startswith("file://")
    assert json.loads((tmp_path / f"{cmd.id}.json").read_text())["data"] == "x" * 100_000
    assert len(last.model_dump_json()) < 2000
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / f"{cmd.id}.json").st_mode) == 0o600


def test_stored_results_expire_and_are_capped(tmp_path: Path) -> None:
    now = time.time()
    old = store_result(tmp_path, "old", b"{}", now=now)
    os.utime(old, (now - RESULTS_KEEP_S - 60,) * 2)
    for i in range(RESULTS_KEEP_FILES + 5):
        path = store_result(tmp_path, f"c{i:04d}", b"{}", now=now)
        os.utime(path, (now - 1000 + i,) * 2)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert len(kept) == RESULTS_KEEP_FILES and "old.json" not in kept
    assert kept[-1] == f"c{RESULTS_KEEP_FILES + 4:04d}.json"  # the newest stay


@pytest.mark.parametrize("params, types", [
    ({"type": "PING"}, ("PING",)),
    ({"type": "FILE_MOVE", "path": "a", "destination": "b"}, ("FILE_MOVE",)),
    ({"type": "FILE_MOVE", "path": "a", "destination": "b", "overwrite": True},
     ("FILE_MOVE", "FILE_DELETE")),
    ({"type": "FILE_RESTORE", "trash_id": "0" * 32}, ("FILE_RESTORE",)),
    ({"type": "FILE_RESTORE", "trash_id": "0" * 32, "overwrite": True},
     ("FILE_RESTORE", "FILE_DELETE")),
])
def test_what_replaces_a_file_follows_the_delete_policy(params: dict[str, Any],
                                                        types: tuple[str, ...]) -> None:
    assert policy_types(command(type=params["type"], params=params)) == types
