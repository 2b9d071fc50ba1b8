"""CRON_LIST, CRON_CREATE, CRON_UPDATE, CRON_DELETE: the cron manager's handlers.

FleetDeck manages only the files it creates, one per entry (``<cron_dir>/fleetdeck-<id>``,
see :mod:`agent.ops.crontab`); it reads every other file of the cron directory, the system
crontabs and the users' crontabs to list their entries, and never writes them. An entry is a
schedule (:mod:`agent.ops.cronexpr`), a template from the allowlist with typed parameters
(:mod:`agent.ops.crontemplates`) and a user: the agent's unprivileged cron user unless the
command names another one it allows, root only when ``cron_allow_root`` is set.

Writes are atomic (a dot-named temporary file, which cron ignores, fsync'd, mode 0644, owned
by root, renamed into place, directory fsync'd) and serialised by an ``flock`` on the cron
directory itself (a read-only descriptor of it: no lock file is ever created there). After
a write the file is read back and checked as cron would read it (and with cronie's
``crontab -T`` where that exists); if the check fails the previous state is put
back. ``dry_run`` returns the exact line and the next fire times, takes no lock and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.ops import crontab
from agent.ops.base import (
    LOCK_WAIT_S,
    OpsContext,
    OpsError,
    Report,
    file_kind,
    flock_exclusive,
    in_thread,
    stop_if_cancelled,
)
from agent.ops.cronexpr import CronSyntaxError, next_fire_times, parse
from agent.ops.crontab import Entry
from agent.ops.crontemplates import check_freeform, render
from agent.settings import AgentSettings
from schemas.commands import Command
from schemas.cron import (
    DEFAULT_PREVIEW,
    CronCreateParams,
    CronDeleteParams,
    CronListParams,
    CronUpdateParams,
    template_params,
)
from schemas.envelope import utcnow

log = logging.getLogger(__name__)

#: most bytes of one crontab read when listing (cron's own files are a few KiB)
MAX_FILE_BYTES = 256 * 1024
#: most entries listed from one crontab
MAX_FILE_ENTRIES = 500

# -- handlers -------------------------------------------------------------------------------

async def list_entries(context: OpsContext, command: Command, report: Report) -> dict[str, Any]:
    params = command.params
    assert isinstance(params, CronListParams)
    settings = context.settings
    zone = server_timezone(settings)
    entries = await asyncio.to_thread(scan, settings)
    if params.owned_only:
        entries = [e for e in entries if e["owned"]]
    for item in entries:
        item["next"] = preview(item.pop("expr", None), zone, params.preview,
                               params.preview_from)
    return {"timezone": zone.key, "cron_dir": str(settings.cron_dir), "entries": entries}


async def create(context: OpsContext, command: Command, report: Report) -> dict[str, Any]:
    params = command.params
    assert isinstance(params, CronCreateParams)
    entry = plan(context.settings, command, params, command.id)
    path = context.settings.cron_dir / entry.file_name
    return await apply(context.settings, path, lambda _current: entry, params,
                       expect_existing=False)


async def update(context: OpsContext, command: Command, report: Report) -> dict[str, Any]:
    params = command.params
    assert isinstance(params, CronUpdateParams)
    path = context.settings.cron_dir / f"{crontab.PREFIX}{params.entry_id}"

    def planned(current: Entry | None) -> Entry:  # with the entry as it is, under the lock
        return plan(context.settings, command, params, params.entry_id, current)

    return await apply(context.settings, path, planned, params, expect_existing=True)


async def delete(context: OpsContext, command: Command, report: Report) -> dict[str, Any]:
    params = command.params
    assert isinstance(params, CronDeleteParams)
    path = context.settings.cron_dir / f"{crontab.PREFIX}{params.entry_id}"
    return await in_thread(lambda: remove(context.settings, path, params.dry_run))


# -- planning (no I/O but the user and path checks) -------------------------------------------

@dataclass(frozen=True)
class Wanted:
    """What the entry is to be: the command's fields, an update's omitted ones filled in
    from the current entry."""

    schedule: str
    template: str
    params: dict[str, Any]
    user: str | None  # None: the agent's cron user
    comment: str


def wanted(params: CronCreateParams | CronUpdateParams, current: Entry | None) -> Wanted:
    if isinstance(params, CronCreateParams):
        return Wanted(params.schedule, params.template, dict(params.params), params.user,
                      params.comment)
    if current is None:
        raise OpsError(f"no FleetDeck cron entry {params.entry_id}")
    template = params.template or current.template
    if params.params is None and template != current.template:
        raise OpsError(f"params: give the parameters of the template {template} (the entry "
                       f"uses {current.template})")
    return Wanted(
        schedule=current.schedule if params.schedule is None else params.schedule,
        template=template,
        params=dict(current.params if params.params is None else params.params),
        user=current.user if params.user is None else params.user,
        comment=current.comment if params.comment is None else params.comment)


def plan(settings: AgentSettings, command: Command,
         params: CronCreateParams | CronUpdateParams, entry_id: str,
         current: Entry | None = None) -> Entry:
    """The entry the command asks for (an update's omitted fields kept from ``current``),
    every check passed; OpsError says which failed."""
    want = wanted(params, current)
    try:
        parse(want.schedule)
    except CronSyntaxError as exc:
        raise OpsError(f"schedule: {exc}") from None
    if want.template == "freeform":
        check_freeform(command, settings)
    user = run_as(want.user, settings)
    try:  # as recorded: every parameter, defaults filled in (an update's may be partial)
        values = template_params(want.template, want.params).model_dump(mode="json")
    except ValueError as exc:
        raise OpsError(f"params.{exc}") from None
    rendered = render(want.template, values, settings)
    return Entry(id=entry_id, schedule=want.schedule, user=user, template=want.template,
                 params=values, comment=want.comment, command=rendered.command,
                 actor=command.actor, command_id=command.id)


def run_as(requested: str | None, settings: AgentSettings) -> str:
    """The user an entry runs as: allowed by the agent's settings and existing here."""
    user = requested or settings.cron_user
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        raise OpsError(f"user: {user!r} does not exist on this server") from None
    if uid == 0:
        if not settings.cron_allow_root:
            raise OpsError(f"user: {user!r} is root, and this agent runs no cron entries as "
                           "root (agent setting cron_allow_root)")
        return user
    if user != settings.cron_user and user not in settings.cron_users:
        raise OpsError(f"user: {user!r} is not allowed (agent settings cron_user and "
                       "cron_users)")
    return user


def server_timezone(settings: AgentSettings) -> ZoneInfo:
    """The zone cron runs in: the configured one, else /etc/localtime's, else UTC."""
    if settings.cron_timezone:
        try:
            return ZoneInfo(settings.cron_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise OpsError(f"agent setting cron_timezone: unknown zone "
                           f"{settings.cron_timezone!r}") from None
    target = os.path.realpath("/etc/localtime")
    key = target.split("/zoneinfo/", 1)[1] if "/zoneinfo/" in target else "UTC"
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def preview(schedule: str | None, zone: ZoneInfo, count: int,
            start: datetime | None = None) -> list[str]:
    if schedule is None or count == 0:
        return []
    try:
        times = next_fire_times(schedule, zone, count, start or utcnow())
    except OverflowError:  # the schema keeps preview_from far from the calendar's ends
        raise OpsError(f"preview_from: no fire times can be computed from "
                       f"{start.isoformat() if start else 'now'}: the search runs off the "
                       "calendar (years 1 to 9999)") from None
    return [t.isoformat() for t in times]


# -- writing -----------------------------------------------------------------------------------

async def apply(settings: AgentSettings, path: Path, make: Callable[[Entry | None], Entry],
                params: CronCreateParams | CronUpdateParams, *,
                expect_existing: bool) -> dict[str, Any]:
    """Write (or with ``dry_run`` only describe) the entry ``make`` plans from the current
    one: the line, the fire times, and the line it replaces."""
    zone = server_timezone(settings)
    times: list[str] = []

    def previewed(current: Entry | None) -> Entry:  # the fire times known before any write
        entry = make(current)
        times.extend(preview(entry.schedule, zone, params.preview or DEFAULT_PREVIEW,
                             params.preview_from))
        return entry

    entry, before = await in_thread(lambda: install(
        settings, path, previewed, dry_run=params.dry_run, expect_existing=expect_existing))
    return {
        "entry_id": entry.id, "path": str(path), "line": entry.line, "dry_run": params.dry_run,
        "timezone": zone.key, "next": times, "before": before, "written": not params.dry_run}


def install(settings: AgentSettings, path: Path, make: Callable[[Entry | None], Entry], *,
            dry_run: bool, expect_existing: bool) -> tuple[Entry, str | None]:
    """Write the entry ``make`` plans from the current one (checked, rolled back if cron
    would not accept it) to ``path``; return it and the entry line it replaced. The current
    entry is read, and the new one planned, under the lock of a real write."""
    with writing(settings.cron_dir, dry_run=dry_run):
        previous = read_owned(path) if expect_existing else None
        if not expect_existing and os.path.lexists(path):
            raise OpsError(f"{path.name} exists already")
        before = None if previous is None else crontab.owned_entry(path.name, previous)
        entry = make(before)
        if dry_run:
            return entry, None if before is None else before.line
        write_atomic(path, crontab.render_file(entry))
        try:
            problems = check_file(path)
        except BaseException:  # the check itself failed (timed out...): do not leave it live
            rollback(path, previous)
            raise
        if problems:
            rollback(path, previous)
            raise OpsError("cron would not accept the file, nothing changed: "
                           + "; ".join(problems))
    log.info("cron entry written", extra={"path": str(path)})
    return entry, None if before is None else before.line


def remove(settings: AgentSettings, path: Path, dry_run: bool) -> dict[str, Any]:
    with writing(settings.cron_dir, dry_run=dry_run):
        previous = read_owned(path)
        entry = crontab.owned_entry(path.name, previous)
        assert entry is not None
        if not dry_run:
            path.unlink()
            fsync_dir(path.parent)
    return {"entry_id": entry.id, "path": str(path), "dry_run": dry_run, "removed": not dry_run,
            "before": entry.line}


def read_owned(path: Path) -> str:
    """The text of a FleetDeck entry file; OpsError if there is none or it is not ours (a
    symbolic link or another special file is never ours, and never read)."""
    try:
        data, more = read_regular(path)
    except FileNotFoundError:
        raise OpsError(f"no FleetDeck cron entry {path.name.removeprefix(crontab.PREFIX)}") \
            from None
    except NotRegular:
        raise OpsError(f"{path} is not a FleetDeck cron file: left alone") from None
    text = data.decode("utf-8", errors="replace")
    if more or crontab.owned_entry(path.name, text) is None:
        raise OpsError(f"{path} is not a FleetDeck cron file: left alone")
    return text


def rollback(path: Path, previous: str | None) -> None:
    if previous is None:
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
    else:
        write_atomic(path, previous)


def write_atomic(path: Path, text: str) -> None:
    """Temporary file (a dot name, which cron skips), fsync, 0644 root, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            if os.geteuid() == 0:
                os.fchown(f.fileno(), 0, 0)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def writing(directory: Path, *, dry_run: bool) -> Iterator[None]:
    """The cron directory, locked for a real write; a dry run only reads, so it takes no
    lock (and so never waits for a writer, nor touches the directory)."""
    if not directory.is_dir():
        raise OpsError(f"cron directory {directory} does not exist")
    if dry_run:
        yield
        return
    with locked(directory):
        yield


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """One writer at a time in the cron directory (threads and processes alike): an
    ``flock`` on a read-only descriptor of the directory itself. Nothing is created in it,
    and each ``open`` is its own lock holder, so threads of one agent exclude each other
    too."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OpsError(f"cron directory {directory}: {exc.strerror}") from None
    try:
        if not flock_exclusive(fd):
            raise OpsError(f"another change of {directory} has held its lock for "
                           f"{LOCK_WAIT_S:.0f} s; nothing was written, try again")
        stop_if_cancelled()
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# -- checking ----------------------------------------------------------------------------------

def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def check_file(path: Path) -> list[str]:
    """Why cron would not run the entry file as written (empty: it would)."""
    info = path.lstat()
    problems = []
    if info.st_mode & 0o022:
        problems.append("the file is writable by group or others")
    if os.geteuid() == 0 and info.st_uid != 0:
        problems.append("the file is not owned by root")
    if not crontab.CRON_NAME.match(path.name):
        problems.append(f"cron ignores the file name {path.name!r}")
    text = path.read_bytes().decode("utf-8", errors="replace")
    problems.extend(crontab.check_text(text, user_exists, owned=True))
    return problems or cronie_check(text)


def cronie_check(text: str) -> list[str]:
    """cronie's own syntax check (``crontab -T``) of the entries, where cronie is installed.
    ``crontab -T`` reads the user crontab format, so the user column is dropped."""
    binary = shutil.which("crontab")
    if binary is None or not _is_cronie(binary):
        return []
    lines = [f"{line.schedule} {line.command}"
             for line in crontab.entry_lines(text, system=True)]
    with tempfile.NamedTemporaryFile("w", suffix=".cron", encoding="utf-8") as f:
        f.write("\n".join([*crontab.ENVIRONMENT, *lines, ""]))
        f.flush()
        done = subprocess.run([binary, "-T", f.name], capture_output=True, text=True,
                              timeout=10, check=False)
    if done.returncode != 0:
        return [f"crontab -T: {(done.stderr or done.stdout).strip()[:300]}"]
    return []


def _is_cronie(binary: str) -> bool:
    try:
        done = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=5,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "cronie" in (done.stdout + done.stderr).lower()


# -- listing -----------------------------------------------------------------------------------

def scan(settings: AgentSettings) -> list[dict[str, Any]]:
    """Every entry of the cron directory, the system crontabs and the users' crontabs.
    Subdirectories are skipped (cron skips them too); symbolic links and other files that
    are not regular files are listed as one entry-less item saying so, never read."""
    out: list[dict[str, Any]] = []
    if settings.cron_dir.is_dir():
        for path in sorted(settings.cron_dir.iterdir()):
            if crontab.CRON_NAME.match(path.name):
                out.extend(file_entries(path, system=True))
    for path in settings.cron_tabs:
        out.extend(file_entries(path, system=True))
    spool = settings.cron_spool_dir
    if spool is not None and spool.is_dir():
        for path in sorted(spool.iterdir()):
            if not path.name.startswith("."):
                out.extend(file_entries(path, system=False))
    return out


def file_entries(path: Path, *, system: bool) -> list[dict[str, Any]]:
    """The entries of one crontab, at most :data:`MAX_FILE_ENTRIES` of its first
    :data:`MAX_FILE_BYTES` bytes; a file that is not read is one item with the reason."""
    source = str(path)
    try:
        data, more = read_regular(path)
    except FileNotFoundError:
        return []
    except NotRegular as exc:
        return [] if exc.kind == "directory" else [note(source, exc.reason)]
    except OSError as exc:
        return [note(source, f"unreadable: {exc.strerror}")]
    if more:  # the last line may be cut: leave it out
        data = data[:data.rfind(b"\n") + 1]
    text = data.decode("utf-8", errors="replace")
    owner = crontab.owned_entry(path.name, text)
    items: list[dict[str, Any]] = []
    for line in crontab.entry_lines(text, system=system):
        if len(items) == MAX_FILE_ENTRIES:
            items.append(note(source, f"only the first {MAX_FILE_ENTRIES} entries are "
                                      "listed: the file has more"))
            break
        items.append(describe(path, line, owner, system))
    if more:
        items.append(note(source, f"only the first {MAX_FILE_BYTES} bytes are read: the "
                                  "file is larger"))
    return items


def note(source: str, error: str) -> dict[str, Any]:
    """An entry-less listing item: a file (or the rest of one) that is not listed, and why."""
    return {"source": source, "owned": False, "error": error}


class NotRegular(OSError):
    """The path is not a regular file (a symbolic link, a directory, a FIFO...): not read."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"not a regular file: {kind}")
        self.kind = kind

    @property
    def reason(self) -> str:
        if self.kind == "symbolic link":
            return "a symbolic link: not followed, its target is not read"
        return f"not a regular file ({self.kind}): not read"


def read_regular(path: Path, limit: int = MAX_FILE_BYTES) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of ``path`` and whether it has more, if ``path`` itself is a
    regular file: never through a symbolic link (O_NOFOLLOW), and a FIFO or device is never
    opened (checked before the open, and the opened file checked again)."""
    kind = file_kind(path.lstat().st_mode)
    if kind != "regular file":
        raise NotRegular(kind)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a link since the lstat
            raise NotRegular("symbolic link") from None
        raise
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind != "regular file":
            raise NotRegular(kind)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data[:limit], len(data) > limit


def describe(path: Path, line: crontab.Line, owner: Entry | None,
             system: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "source": str(path), "line_no": line.number, "line": line.text,
        "schedule": line.schedule, "user": line.user if system else path.name,
        "command": line.command, "owned": owner is not None}
    problem = line_problem(line, system)
    if problem:
        item["error"] = f"cron skips this line: {problem}"
    else:
        item["expr"] = line.schedule  # only a line cron runs has fire times
        if crontab.unescaped_percent(line.command):
            item["warning"] = crontab.PERCENT_WARNING
    if owner is not None:
        item.update(entry_id=owner.id, template=owner.template, params=owner.params,
                    comment=owner.comment, actor=owner.actor,
                    modified=line.text != owner.line)
    return item


def line_problem(line: crontab.Line, system: bool) -> str | None:
    """Why cron would not run ``line`` (None: it would)."""
    try:
        parse(line.schedule)
    except CronSyntaxError as exc:
        return str(exc)
    return crontab.missing(line, system=system)
