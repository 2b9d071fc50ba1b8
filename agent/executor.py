"""Verify, ACK, run, report: what an agent does with each command.

:func:`check` is the gate (signature, binding, expiry, replay), plain and synchronous.
:class:`ReplayGuard` remembers every command id the agent accepted until the command could no
longer be valid anyway, on disk (fsync'd before the command runs), so a command redelivered
after a crash or a restart is refused: at most once per agent. :class:`Executor` ACKs first
(while the id is written), then runs the handler under its timeout, reporting
running/progress/result through ``emit``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from agent.ops import Handler, OpsContext, OpsError, bind
from agent.settings import AgentSettings
from schemas.commands import (
    MAX_INLINE_RESULT_BYTES,
    Command,
    CommandEvent,
    EventKind,
    SignedCommand,
)
from schemas.envelope import utcnow

log = logging.getLogger(__name__)

#: how far a command's issue time may lie ahead of the agent's clock
MAX_CLOCK_SKEW = timedelta(minutes=5)
#: Large results stay on the agent this long, and at most this many of them.
RESULTS_KEEP_S = 24 * 3600
RESULTS_KEEP_FILES = 200
Emit = Callable[[CommandEvent], Awaitable[None]]


class Rejected(Exception):
    """The agent refuses the command; the message is the reason it reports."""


def check(signed: SignedCommand, keys: Mapping[str, Ed25519PublicKey], *, tenant: str,
          server_id: str, now: datetime, replay: ReplayGuard) -> Command:
    """The command, if this agent may run it now; :class:`Rejected` says why not."""
    key = keys.get(signed.key_id)
    if key is None:
        raise Rejected(f"signed with unknown key {signed.key_id!r}")
    try:
        command = signed.verified(key)
    except ValidationError as exc:
        raise Rejected(f"invalid command: {exc.errors()[0]['msg']}") from exc
    except ValueError as exc:
        raise Rejected(str(exc)) from exc
    if command.tenant != tenant:
        raise Rejected(f"bound to tenant {command.tenant!r}, this agent serves {tenant!r}")
    if command.server_id != server_id:
        raise Rejected(f"bound to server {command.server_id!r}, not {server_id!r}")
    if command.expires_at <= now:
        raise Rejected(f"expired at {command.expires_at.isoformat()}")
    if command.issued_at > now + MAX_CLOCK_SKEW:
        raise Rejected("issued in the future: the clocks disagree by over 5 minutes")
    if replay.seen(command.id):
        raise Rejected("replayed: this command id was accepted before")
    return command


def claimed_id(signed: SignedCommand) -> str | None:
    """The id the (possibly forged or broken) command text claims, to report a rejection."""
    try:
        value = json.loads(signed.command).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


#: longest a stopping agent waits to record or report a command it accepted but did not run
STOPPING_WAIT_S = 2.0


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Fetch a background future's outcome so a failure is logged, not left unretrieved."""
    if not future.cancelled() and future.exception() is not None:
        log.error("a replay-guard write failed: %s", future.exception())


class ReplayGuard:
    """Ids of accepted commands, each kept until its expiry plus the clock-skew margin.

    Backed by an append-only file of ``id expiry-epoch`` lines (None: memory only, for
    tests); rewritten without stale lines when they outnumber the live ones.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._until: dict[str, float] = {}
        self._lines = 0
        # group commit: lines waiting for the next fsync, how many were ever queued and how
        # many of those are on disk; one fsync (in a thread) covers everything queued so far
        self._buffer: list[str] = []
        self._queued = 0
        self._synced = 0
        self._lock = asyncio.Lock()
        # a thread of its own: handlers blocked in the shared pool (a file lock, a slow
        # disk) must never hold up the fsync every ACK waits for
        self._disk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="replay-guard")
        # the log stays open for appends (used on the disk thread only): opening, wrapping
        # and closing it for every group commit took the disk thread several turns at the
        # GIL, which under load cost the ACK more than the fsync itself
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._load(path)

    def seen(self, command_id: str) -> bool:
        return command_id in self._until

    def mark(self, command: Command) -> float:
        """Count the id as seen from now on (in memory); returns until when it is kept."""
        until = (command.expires_at + MAX_CLOCK_SKEW).timestamp()
        self._until[command.id] = until
        return until

    async def remember(self, command: Command) -> None:
        """Record the id durably; returns only once it is on disk. The id counts as seen
        at once (a second delivery arriving meanwhile is refused); commands accepted at the
        same moment share one fsync, which runs off the event loop."""
        until = self.mark(command)
        if self.path is None:
            return
        self._buffer.append(f"{command.id} {until:.0f}\n")
        self._queued += 1
        mine = self._queued
        async with self._lock:
            if self._synced >= mine:  # an fsync that started after ours was queued covered it
                return
            lines, self._buffer = self._buffer, []
            upto = self._queued
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._disk, self._append, lines)
            except BaseException:  # not on disk: the next caller writes these lines again
                self._buffer[:0] = lines
                raise
            self._synced = upto
            self._lines += len(lines)
            if self._lines > 1000 and self._lines > 2 * len(self._prune()):
                try:  # compaction only: the id above is on disk whatever happens here
                    await loop.run_in_executor(self._disk, self._rewrite, dict(self._until))
                except OSError as exc:
                    log.warning("cannot compact the replay log (kept as it is): %s", exc)

    def _append(self, lines: list[str]) -> None:
        assert self.path is not None
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        data = "".join(lines).encode("ascii")
        while data:  # a write may be short (disk full midway raises OSError instead)
            data = data[os.write(self._fd, data):]
        os.fdatasync(self._fd)  # the data and the file's new size

    def __len__(self) -> int:
        return len(self._until)

    def _prune(self) -> dict[str, float]:
        now = time.time()
        self._until = {k: v for k, v in self._until.items() if v > now}
        return self._until

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        for line in path.read_text(encoding="ascii", errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                self._until[parts[0]] = float(parts[1])
            self._lines += 1
        self._prune()

    def _rewrite(self, until: dict[str, float]) -> None:
        assert self.path is not None
        tmp = self.path.with_suffix(".tmp")
        try:
            with open(tmp, "w", encoding="ascii") as f:
                f.writelines(f"{k} {v:.0f}\n" for k, v in until.items())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        self._lines = len(until)
        self._close()  # the next append opens the new file

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def close(self) -> None:
        """Close the log file (a later :meth:`remember` opens it again)."""
        async with self._lock:
            await asyncio.get_running_loop().run_in_executor(self._disk, self._close)


def store_result(directory: Path, command_id: str, data: bytes,
                 now: float | None = None) -> Path:
    """Write a large result where only the agent's user can read it (the directory 0700,
    the file 0600: a FILE_READ result holds the file's content), after removing results
    older than RESULTS_KEEP_S and all but the newest RESULTS_KEEP_FILES."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    prune_results(directory, time.time() if now is None else now)
    path = directory.resolve() / f"{command_id}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file of the same name may have had another mode
        rest = memoryview(data)
        while rest:  # os.write may write less than it was given
            rest = rest[os.write(fd, rest):]
    finally:
        os.close(fd)
    return path


def prune_results(directory: Path, now: float) -> None:
    found = []
    for entry in os.scandir(directory):
        if entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
            found.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
    found.sort(reverse=True)
    for rank, (mtime, path) in enumerate(found):
        if rank >= RESULTS_KEEP_FILES - 1 or now - mtime > RESULTS_KEEP_S:
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile: as wanted
                os.unlink(path)


class Executor:
    """Runs the commands of one or more servers (a real agent has one; a simulator many)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], replay: ReplayGuard, emit: Emit,
                 *, context: OpsContext | None = None,
                 handlers: Mapping[str, Handler] | None = None,
                 results_dir: Path | None = None) -> None:
        self.keys = keys
        self.replay = replay
        self.emit = emit
        # handlers are bound to the agent's settings (cron directory, sandbox roots...);
        # without a context, the defaults of AgentSettings apply
        self.handlers = handlers if handlers is not None else bind(
            context or OpsContext(AgentSettings()))
        self.results_dir = results_dir
        self.running: dict[str, asyncio.Task[None]] = {}
        self.counts = {"acked": 0, "rejected": 0, "succeeded": 0, "failed": 0, "timed-out": 0}

    async def receive(self, signed: SignedCommand, *, tenant: str, server_id: str) -> None:
        """Check the command and ACK it (or report the rejection); running goes on in a task."""
        try:
            command = check(signed, self.keys, tenant=tenant, server_id=server_id,
                            now=utcnow(), replay=self.replay)
        except Rejected as exc:
            await self._reject(signed, tenant, server_id, str(exc))
            return
        # The id is seen at once (a second delivery is refused from here on) and must be on
        # disk before the command runs, so it never runs twice; the ACK need not wait for
        # the disk. Crashing after the ACK and before the write, the agent gets the command
        # again (its offset was not committed), ACKs it again and runs it once; stopping
        # there, it says the command was not run (see _stopped_before_running).
        self.replay.mark(command)  # now, not when the write below first runs
        remembered = asyncio.ensure_future(self.replay.remember(command))
        try:
            await self._report(command, EventKind.ACKED, "verified")
            self.counts["acked"] += 1
            try:
                await asyncio.shield(remembered)
            except (OSError, ValueError) as exc:
                log.error("command %s not run: cannot record it as accepted: %s",
                          command.id, exc)
                self.counts["failed"] += 1
                await self._report(command, EventKind.FAILED, "not run: the agent cannot "
                                   f"record it as accepted ({exc})"[:2000], seq=1)
                return
        except asyncio.CancelledError:
            await self._stopped_before_running(command, remembered)
            raise
        except Exception:
            remembered.add_done_callback(_retrieve)
            raise
        task = asyncio.create_task(self._run(command), name=f"command-{command.id}")
        self.running[command.id] = task
        task.add_done_callback(lambda _t: self.running.pop(command.id, None))

    async def _stopped_before_running(self, command: Command,
                                      remembered: asyncio.Future[None]) -> None:
        """The agent is stopping between accepting ``command`` and running it. Once its id
        is on disk a redelivery would be refused as a replay, so the command would never run
        nor end: say so now (best effort, briefly). An id that never reached the disk needs
        nothing: the command comes again and runs then."""
        try:
            async with asyncio.timeout(STOPPING_WAIT_S):
                await asyncio.shield(remembered)
        except (OSError, ValueError, TimeoutError):
            remembered.add_done_callback(_retrieve)
            return
        self.counts["failed"] += 1
        try:
            async with asyncio.timeout(STOPPING_WAIT_S):
                await self._report(command, EventKind.FAILED,
                                   "not run: the agent stopped before running it", seq=1)
        except Exception as exc:  # stopping anyway: the tracker times the command out
            log.warning("cannot report command %s as not run: %r", command.id, exc)

    async def stop(self) -> None:
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)
        await self.replay.close()

    async def _run(self, command: Command) -> None:
        handler = self.handlers[command.type]
        seq = 1

        async def report(fraction: float, message: str) -> None:
            nonlocal seq
            seq += 1
            await self._report(command, EventKind.PROGRESS, message[:2000], seq=seq,
                               progress=min(max(fraction, 0.0), 1.0))

        try:
            await self._report(command, EventKind.RUNNING, "running", seq=1)
            async with asyncio.timeout(command.timeout_s):
                result = await handler(command, report)
        except TimeoutError:
            kind, result = EventKind.TIMED_OUT, None
            message = f"no result within {command.timeout_s} s"
        except OpsError as exc:
            kind, message, result = EventKind.FAILED, str(exc), None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a handler bug must not take the agent down
            log.exception("command %s (%s) crashed", command.id, command.type)
            kind, message, result = EventKind.FAILED, f"handler error: {type(exc).__name__}", None
        else:
            kind, message = EventKind.SUCCEEDED, "done"
        self.counts[str(kind)] += 1
        inline, ref = await self._result(command, result)
        await self._report(command, kind, message, seq=seq + 1, result=inline, result_ref=ref)

    async def _result(self, command: Command, result: dict[str, Any] | None
                      ) -> tuple[dict[str, Any] | None, str | None]:
        """Small results go inline; larger ones are written to the results directory (on a
        worker thread) and referenced, never pushed through Kafka. A result that cannot be
        written is reported as not stored: the command's outcome still goes out."""
        if result is None:
            return None, None
        data = json.dumps(result, default=str).encode()
        if len(data) <= MAX_INLINE_RESULT_BYTES:
            return json.loads(data), None
        if self.results_dir is None:
            return {"truncated": True, "bytes": len(data)}, None
        try:
            path = await asyncio.to_thread(store_result, self.results_dir, command.id, data)
        except OSError as exc:
            log.error("command %s: cannot store its result: %s", command.id, exc)
            return {"truncated": True, "stored": False}, None
        return {"truncated": True, "bytes": len(data)}, f"file://{path}"

    async def _reject(self, signed: SignedCommand, tenant: str, server_id: str,
                      reason: str) -> None:
        self.counts["rejected"] += 1
        command_id = claimed_id(signed)
        log.warning("command rejected", extra={"command_id": command_id, "server_id": server_id,
                                               "reason": reason})
        if command_id is None:
            return  # nothing the control plane could match the report to
        await self.emit(CommandEvent(tenant=tenant, server_id=server_id, command_id=command_id,
                                     kind=EventKind.REJECTED, message=reason[:2000]))

    async def _report(self, command: Command, kind: EventKind, message: str, *, seq: int = 0,
                      **fields: Any) -> None:
        await self.emit(CommandEvent(tenant=command.tenant, server_id=command.server_id,
                                     command_id=command.id, kind=kind, message=message,
                                     agent_seq=seq, **fields))
