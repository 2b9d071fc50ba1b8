"""What every handler shares: its error, the progress callback type and the ops context."""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from agent.settings import AgentSettings

#: report(fraction 0..1, message) streams progress to the control plane
Report = Callable[[float, str], Awaitable[None]]


class OpsError(Exception):
    """A command failed for a reason the operator should read (the message is reported)."""


@dataclass(frozen=True)
class OpsContext:
    """What a handler may need beyond its command, handed over explicitly (never a global):
    the agent's settings (sandbox roots, cron directory, policies...)."""

    settings: AgentSettings


#: Longest a mutation waits for another one on the same root or cron directory.
LOCK_WAIT_S = 10.0


def flock_exclusive(fd: int, wait_s: float = LOCK_WAIT_S) -> bool:
    """Take an exclusive ``flock`` on ``fd``, waiting at most ``wait_s`` (False if another
    holder kept it that long). Handlers run on worker threads, and a thread blocked in a
    plain ``flock`` could never be stopped: a stuck holder would pin one thread per waiter."""
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


T = TypeVar("T")

#: set in a handler's worker thread when the command was cancelled (it timed out): the
#: thread cannot be stopped, so it checks before it changes anything
_CANCELLED: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "fleetdeck_ops_cancelled", default=None)


async def in_thread(work: Callable[[], T]) -> T:
    """``work()`` (blocking file I/O) on a worker thread; when the command is cancelled
    meanwhile (its timeout), the thread is told, and :func:`stop_if_cancelled` in it raises
    before the next change instead of making it after the command was reported timed out."""
    cancelled = threading.Event()
    token = _CANCELLED.set(cancelled)  # asyncio.to_thread runs work in a copy of this context
    try:
        return await asyncio.to_thread(work)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    finally:
        _CANCELLED.reset(token)


def stop_if_cancelled() -> None:
    """OpsError if this handler's command was cancelled: call it before each change."""
    cancelled = _CANCELLED.get()
    if cancelled is not None and cancelled.is_set():
        raise OpsError("the command was cancelled (it timed out) before this change; "
                       "nothing more was changed")


def file_kind(mode: int) -> str:
    """How messages name the type of a file system object (``st_mode``)."""
    for test, kind in ((stat.S_ISREG, "regular file"), (stat.S_ISLNK, "symbolic link"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"
