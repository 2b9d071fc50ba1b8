"""CRON_LIST, CRON_CREATE, CRON_UPDATE, CRON_DELETE: the cron manager's handlers.

FleetDeck manages only the files it creates, one per entry (``<cron_dir>/fleetdeck-<id>``,
see :mod:`agent.ops.crontab`); it reads every other file of the cron directory, the system
crontabs and the users' crontabs to list their entries, and never writes them. An entry is a
schedule (:mod:`agent.ops.cronexpr`), a template from the allowlist with typed parameters
(:mod:`agent.ops.crontemplates`) and a user: the agent's unprivileged cron user unless the
command names another one it allows, root only when ``cron_allow_root`` is set.

Writes are atomic (a dot-named temporary file, which cron ignores, fsync'd, mode 0644, owned
by root, renamed into place, directory fsync'd) and serialised by a lock file in the cron
directory. After a write the file is read back and checked as cron would read it (and with
cronie's ``crontab -T`` where that exists); if the check fails the previous state is put
back. ``dry_run`` returns the exact line and the next fire times and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.ops import crontab
from agent.ops.base import OpsContext, OpsError, Report
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
)
from schemas.envelope import utcnow

log = logging.getLogger(__name__)

LOCK_NAME = ".fleetdeck.lock"


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
    return await apply(context.settings, path, entry, params, expect_existing=False)


async def update(context: OpsContext, command: Command, report: Report) -> dict[str, Any]:
    params = command.params
    assert isinstance(params, CronUpdateParams)
    entry = plan(context.settings, command, params, params.entry_id)
    path = context.settings.cron_dir / entry.file_name
    return await apply(context.settings, path, entry, params, expect_existing=True)


async def delete(context: OpsContext, command: Command, report: Report) -> dict[str, Any]:
    params = command.params
    assert isinstance(params, CronDeleteParams)
    path = context.settings.cron_dir / f"{crontab.PREFIX}{params.entry_id}"
    return await asyncio.to_thread(remove, context.settings, path, params.dry_run)


# -- planning (no I/O but the user and path checks) -------------------------------------------

def plan(settings: AgentSettings, command: Command,
         params: CronCreateParams | CronUpdateParams, entry_id: str) -> Entry:
    """The entry the command asks for, every check passed; OpsError says which failed."""
    try:
        parse(params.schedule)
    except CronSyntaxError as exc:
        raise OpsError(f"schedule: {exc}") from None
    if params.template == "freeform":
        check_freeform(command, settings)
    user = run_as(params.user, settings)
    rendered = render(params.template, params.params, settings)
    return Entry(id=entry_id, schedule=params.schedule, user=user, template=params.template,
                 params=dict(params.params), comment=params.comment, command=rendered.command,
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
    times = next_fire_times(schedule, zone, count, start or utcnow())
    return [t.isoformat() for t in times]


# -- writing -----------------------------------------------------------------------------------

async def apply(settings: AgentSettings, path: Path, entry: Entry,
                params: CronCreateParams | CronUpdateParams, *,
                expect_existing: bool) -> dict[str, Any]:
    """Write (or with ``dry_run`` only describe) ``entry``: the line, the fire times, and
    the line it replaces."""
    zone = server_timezone(settings)
    result: dict[str, Any] = {
        "entry_id": entry.id, "path": str(path), "line": entry.line, "dry_run": params.dry_run,
        "timezone": zone.key,
        "next": preview(entry.schedule, zone, params.preview or DEFAULT_PREVIEW,
                        params.preview_from)}
    result["before"] = await asyncio.to_thread(
        install, settings, path, crontab.render_file(entry), dry_run=params.dry_run,
        expect_existing=expect_existing)
    result["written"] = not params.dry_run
    return result


def install(settings: AgentSettings, path: Path, text: str, *, dry_run: bool,
            expect_existing: bool) -> str | None:
    """Write ``text`` to ``path`` (checked, rolled back if cron would not accept it) and
    return the entry line it replaced."""
    with locked(settings.cron_dir):
        previous = read_owned(path) if expect_existing else None
        if not expect_existing and path.exists():
            raise OpsError(f"{path.name} exists already")
        before = None if previous is None else crontab.owned_entry(path.name, previous)
        if dry_run:
            return None if before is None else before.line
        write_atomic(path, text)
        problems = check_file(path)
        if problems:
            rollback(path, previous)
            raise OpsError("cron would not accept the file, nothing changed: "
                           + "; ".join(problems))
    log.info("cron entry written", extra={"path": str(path)})
    return None if before is None else before.line


def remove(settings: AgentSettings, path: Path, dry_run: bool) -> dict[str, Any]:
    with locked(settings.cron_dir):
        previous = read_owned(path)
        entry = crontab.owned_entry(path.name, previous)
        assert entry is not None
        if not dry_run:
            path.unlink()
            fsync_dir(path.parent)
    return {"entry_id": entry.id, "path": str(path), "dry_run": dry_run, "removed": not dry_run,
            "before": entry.line}


def read_owned(path: Path) -> str:
    """The text of a FleetDeck entry file; OpsError if there is none or it is not ours."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OpsError(f"no FleetDeck cron entry {path.name.removeprefix(crontab.PREFIX)}") \
            from None
    if path.is_symlink() or crontab.owned_entry(path.name, text) is None:
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
def locked(directory: Path) -> Iterator[None]:
    """One writer at a time in the cron directory (threads and processes alike)."""
    if not directory.is_dir():
        raise OpsError(f"cron directory {directory} does not exist")
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
    """Every entry of the cron directory, the system crontabs and the users' crontabs."""
    out: list[dict[str, Any]] = []
    if settings.cron_dir.is_dir():
        for path in sorted(settings.cron_dir.iterdir()):
            if path.is_file() and crontab.CRON_NAME.match(path.name):
                out.extend(file_entries(path, system=True))
    for path in settings.cron_tabs:
        if path.is_file():
            out.extend(file_entries(path, system=True))
    spool = settings.cron_spool_dir
    if spool is not None and spool.is_dir():
        for path in sorted(spool.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                out.extend(file_entries(path, system=False))
    return out


def file_entries(path: Path, *, system: bool) -> list[dict[str, Any]]:
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        return [{"source": str(path), "owned": False, "error": f"unreadable: {exc.strerror}"}]
    owner = crontab.owned_entry(path.name, text)
    return [describe(path, line, owner, system) for line in crontab.entry_lines(
        text, system=system)]


def describe(path: Path, line: crontab.Line, owner: Entry | None,
             system: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "source": str(path), "line_no": line.number, "line": line.text,
        "schedule": line.schedule, "user": line.user if system else path.name,
        "command": line.command, "owned": owner is not None}
    try:
        parse(line.schedule)
        item["expr"] = line.schedule
    except CronSyntaxError as exc:
        item["error"] = f"cron skips this line: {exc}"
    if owner is not None:
        item.update(entry_id=owner.id, template=owner.template, params=owner.params,
                    comment=owner.comment, actor=owner.actor,
                    modified=line.text != owner.line)
    return item
