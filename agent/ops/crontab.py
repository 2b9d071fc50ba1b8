"""Cron file text: FleetDeck's entry files, reading any crontab, and a strict check.

FleetDeck writes one file per entry, ``fleetdeck-<entry id>`` in the cron directory, in the
system crontab format (a user column), so it never has to edit a line it did not write::

    # FleetDeck cron entry <id>: managed by FleetDeck; change it through FleetDeck only.
    # fleetdeck-entry: {"id": ..., "template": ..., "params": {...}, "line": ..., ...}
    SHELL=/bin/sh
    PATH=/usr/sbin:/usr/bin:/sbin:/bin
    30 2 * * * nobody /usr/bin/curl ... --url 'https://example.com/health'

The marker is one line of ASCII JSON (newlines and non-ASCII escaped). A file is FleetDeck's
when its name and its marker agree; its entry line must equal the marker's ``line``, else it
was changed behind FleetDeck's back (listed as ``modified``).

:func:`check_text` mirrors what cronie and Debian's cron accept in a system crontab: a final
newline, no NUL, comments, ``NAME=value`` lines, entries of a schedule, a user that exists and
a non-empty command of at most 1000 characters; FleetDeck's own lines must also escape every
``%``. Pure text in, problems out (the user lookup is passed in).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from agent.ops.cronexpr import CronSyntaxError, parse

PREFIX = "fleetdeck-"
MARKER = "# fleetdeck-entry: "
HEADER = "# FleetDeck cron entry {id}: managed by FleetDeck; change it through FleetDeck only."
ENVIRONMENT = ("SHELL=/bin/sh", "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
#: file names cron reads in /etc/cron.d (Debian's run-parts rule; cronie skips dot files)
CRON_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
OWNED_NAME = re.compile(r"^fleetdeck-([0-9a-f]{32})$")
ENV_LINE = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
MAX_COMMAND = 1000


@dataclass(frozen=True)
class Entry:
    """A FleetDeck-owned entry, as its marker records it."""

    id: str
    schedule: str
    user: str
    template: str
    params: dict[str, Any]
    comment: str
    command: str  # the cron command field (quoted, % escaped)
    actor: str
    command_id: str

    @property
    def line(self) -> str:
        return f"{self.schedule} {self.user} {self.command}"

    @property
    def file_name(self) -> str:
        return f"{PREFIX}{self.id}"


def render_file(entry: Entry) -> str:
    marker = json.dumps({**asdict(entry), "line": entry.line}, ensure_ascii=True,
                        sort_keys=True, separators=(",", ":"))
    return "\n".join([HEADER.format(id=entry.id), MARKER + marker, *ENVIRONMENT,
                      entry.line, ""])


@dataclass(frozen=True)
class Line:
    """One cron entry of any crontab: where it is and what it says."""

    number: int
    text: str
    schedule: str
    user: str | None
    command: str


def entry_lines(text: str, *, system: bool) -> Iterator[Line]:
    """The entries of a crontab (``system``: with a user column), comments and environment
    lines skipped; lines too short to be entries come back with an empty command."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or ENV_LINE.match(line):
            continue
        yield split_line(number, line, system=system)


def split_line(number: int, line: str, *, system: bool) -> Line:
    time_words = 1 if line.startswith("@") else 5
    words = line.split(None, time_words + (1 if system else 0))
    schedule = " ".join(words[:time_words])
    rest = words[time_words:]
    user = rest.pop(0) if system and rest else None
    return Line(number, line, schedule, user, rest[0] if rest else "")


def owned_entry(name: str, text: str) -> Entry | None:
    """The entry a FleetDeck file records, or None if the file is not FleetDeck's."""
    match = OWNED_NAME.match(name)
    lines = text.splitlines()
    if match is None or len(lines) < 2 or not lines[1].startswith(MARKER):
        return None
    try:
        data = json.loads(lines[1].removeprefix(MARKER))
        data.pop("line", None)
        entry = Entry(**data)
    except (ValueError, TypeError):
        return None
    return entry if entry.id == match[1] else None


def check_text(text: str, user_exists: Callable[[str], bool], *, owned: bool) -> list[str]:
    """Why cron would refuse or misread this system crontab (empty: it is fine)."""
    if "\0" in text:
        return ["the file contains a NUL byte"]
    if text and not text.endswith("\n"):
        return ["the last line has no newline (cron ignores it)"]
    problems: list[str] = []
    for line in entry_lines(text, system=True):
        problems.extend(f"line {line.number}: {p}" for p in line_problems(line, user_exists,
                                                                          owned=owned))
    return problems


def missing(line: Line, *, system: bool) -> str | None:
    """What an entry line lacks after its schedule for cron to run it (None: nothing):
    a system crontab needs a user and a command, a user's crontab a command."""
    if system and not line.user:
        return "no user and no command after the schedule"
    if not line.command:
        return "no command after the user" if system else "no command after the schedule"
    return None


def unescaped_percent(command: str) -> bool:
    """Whether cron cuts ``command`` at a bare ``%`` (``\\%`` is a literal one)."""
    return re.search(r"(?<!\\)%", command) is not None


PERCENT_WARNING = ("unescaped % in the command: cron turns the first % into a newline and "
                   "passes the rest of the line to the command as its standard input "
                   "(write \\% for a literal %)")


def line_problems(line: Line, user_exists: Callable[[str], bool], *,
                  owned: bool) -> list[str]:
    try:
        parse(line.schedule)
    except CronSyntaxError as exc:
        return [f"bad schedule: {exc}"]
    lacking = missing(line, system=True)
    if lacking or not line.user:
        return [lacking or "no user"]
    problems = []
    if not user_exists(line.user):
        problems.append(f"user {line.user!r} does not exist")
    if len(line.command) > MAX_COMMAND:
        problems.append(f"command longer than {MAX_COMMAND} characters")
    if owned and unescaped_percent(line.command):
        problems.append("unescaped % (cron would cut the command there)")
    return problems
