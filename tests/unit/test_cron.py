"""The cron manager: schedules, fire times across daylight saving, the template allowlist,
hostile input, and the handlers on a temporary cron directory."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from pydantic import ValidationError

from agent.ops import OpsContext, OpsError, bind, cron
from agent.ops.cronexpr import CronSyntaxError, next_fire_times, parse
from agent.ops.crontab import PERCENT_WARNING, check_text, owned_entry
from agent.settings import AgentSettings
from schemas.commands import ApprovalStep, Command
from schemas.envelope import utcnow

SCRIPT = "rotate-cache.sh"


@pytest.fixture
def settings(tmp_path: Path) -> AgentSettings:
    for name in ("cron.d", "srv/www", "srv/backups", "logrotate.d", "scripts", "spool"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "logrotate.d/nginx").write_text("/var/log/nginx/*.log { daily }\n")
    script = tmp_path / "scripts" / SCRIPT
    script.write_text("#!/bin/sh\necho rotated\n")
    script.chmod(0o755)
    (tmp_path / "etc").mkdir()
    (tmp_path / "srv/escape").symlink_to(tmp_path / "etc")
    return AgentSettings(
        cron_dir=tmp_path / "cron.d", cron_tabs=[tmp_path / "crontab"],
        cron_spool_dir=tmp_path / "spool", cron_timezone="Europe/Berlin", cron_user="nobody",
        cron_users=["daemon"], cron_path_roots=[tmp_path / "srv"],
        cron_logrotate_dir=tmp_path / "logrotate.d", cron_script_dir=tmp_path / "scripts",
        cron_freeform_tenants=["ops"])


def command(kind: str, *, tenant: str = "default", actor: str = "olivia",
            approvals: tuple[ApprovalStep, ...] = (), **params: Any) -> Command:
    now = utcnow()
    return Command(tenant=tenant, server_id="web-1", type=kind, params={"type": kind, **params},
                   actor=actor, reason="testing the cron manager", issued_at=now,
                   expires_at=now + timedelta(minutes=1), approvals=approvals)


def approved(by: str) -> tuple[ApprovalStep, ...]:
    return (ApprovalStep(actor=by, decision="approved", comment="ok", at=utcnow()),)


HEALTH = {"url": "https://example.com/health"}


def outcome(settings: AgentSettings, schedule: str = "0 3 * * *",
            template: str = "curl-healthcheck", params: dict[str, Any] | None = None,
            **fields: Any) -> str:
    """What becomes of a CRON_CREATE: "refused: <field>: <why>" or "line: <cron line>"; the
    model's checks first (what the API applies), then the agent's."""
    envelope = {k: fields.pop(k) for k in ("tenant", "actor", "approvals") if k in fields}
    try:
        cmd = command("CRON_CREATE", schedule=schedule, template=template,
                      params=HEALTH if params is None else params, **fields, **envelope)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][2:])
        return f"refused: {where}: {first['msg'].removeprefix('Value error, ')}"
    assert cmd.params.type == "CRON_CREATE"
    try:
        entry = cron.plan(settings, cmd, cmd.params, cmd.id)
    except OpsError as exc:
        return f"refused: {exc}"
    return f"line: {entry.line}"


# -- hostile input: each refused with its reason, or neutralised by quoting ------------------

CURL = ("nobody /usr/bin/curl --fail --silent --show-error --proto =http,https --output "
        "/dev/null --max-time 10 --retry 0 --url")

HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    # schedules (all refused)
    ("command after schedule", {"schedule": "* * * * * ; rm -rf /"},
     "refused: schedule: character ';' is not allowed in a schedule"),
    ("substitution", {"schedule": "$(id) * * * *"}, "refused: schedule: character '$'"),
    ("backticks", {"schedule": "`id` * * * *"}, "refused: schedule: character '`'"),
    ("newline and a second entry", {"schedule": "* * * * *\n* * * * * root evil"},
     "refused: schedule: control character '\\n' is not allowed: a schedule is one line"),
    ("carriage return", {"schedule": "0 3 * * *\r"}, "refused: schedule: control character"),
    ("percent", {"schedule": "0 3 * * * % evil"}, "refused: schedule: character '%'"),
    ("redirect", {"schedule": "0 3 * * * > /etc/passwd"}, "refused: schedule: character '>'"),
    ("and-and", {"schedule": "0 3 * * * && id"}, "refused: schedule: character '&'"),
    ("fullwidth digits", {"schedule": "\uff10 3 * * *"},
     "refused: schedule: character '\uff10' (U+FF10) is not allowed: a schedule is plain ASCII"),
    ("zero-width space", {"schedule": "0 3 * * *\u200b"}, "refused: schedule: character "
     "'\\u200b' (U+200B)"),
    ("step zero", {"schedule": "*/0 * * * *"},
     "refused: schedule: minute: step value of zero in '*/0'"),
    ("step zero in a range", {"schedule": "0 1-5/0 * * *"},
     "refused: schedule: hour: step value of zero in '1-5/0'"),
    ("hour out of range", {"schedule": "0 24 * * *"},
     "refused: schedule: hour: 24 is out of range 0-23"),
    ("minute out of range", {"schedule": "60 * * * *"},
     "refused: schedule: minute: 60 is out of range 0-59"),
    ("day zero", {"schedule": "0 0 0 * *"},
     "refused: schedule: day-of-month: 0 is out of range 1-31"),
    ("month 13", {"schedule": "0 0 * 13 *"}, "refused: schedule: month: 13 is out of range 1-12"),
    ("weekday 8", {"schedule": "0 0 * * 8"},
     "refused: schedule: day-of-week: 8 is out of range 0-7"),
    ("huge number", {"schedule": "99999999999999999999 * * * *"},
     "refused: schedule: minute: 99999999999999999999 is out of range 0-59"),
    ("February 30", {"schedule": "0 0 30 2 *"},
     "refused: schedule: never fires: February has no day 30"),
    ("31st of short months", {"schedule": "0 0 31 4,6,9,11 *"},
     "refused: schedule: never fires: April, June, September and November have no day 31"),
    ("February 30/31 by name", {"schedule": "0 0 30-31 feb *"},
     "refused: schedule: never fires: February has no day 30 or 31"),
    ("six fields", {"schedule": "0 0 1 1 * 2030"},
     "refused: schedule: expected 5 fields (minute hour day-of-month month day-of-week), got 6"),
    ("four fields", {"schedule": "0 0 1 1"}, "refused: schedule: expected 5 fields"),
    ("empty", {"schedule": ""}, "refused: schedule: the schedule is empty"),
    ("blank", {"schedule": "   "}, "refused: schedule: the schedule is empty"),
    ("huge", {"schedule": "1," * 60 + "1 * * * *"},
     "refused: schedule: the schedule is longer than 100 characters"),
    ("step on a number", {"schedule": "5/10 * * * *"},
     "refused: schedule: minute: a step needs a range or '*'"),
    ("backwards range", {"schedule": "0 0 * * fri-mon"},
     "refused: schedule: day-of-week: the range fri-mon runs backwards"),
    ("unknown macro", {"schedule": "@every"},
     "refused: schedule: unknown macro @every (known: @yearly, @annually, @monthly, @weekly, "
     "@daily, @midnight, @hourly, @reboot)"),
    ("unknown macro with fields", {"schedule": "@every 5m"},
     "refused: schedule: unknown macro @every (known: @yearly, @annually, @monthly, @weekly, "
     "@daily, @midnight, @hourly, @reboot)"),
    ("upper-case macro", {"schedule": "@DAILY"}, "refused: schedule: unknown macro @DAILY "
     "(known: @yearly"),
    ("@reboot with fields", {"schedule": "@reboot 5"},
     "refused: schedule: the macro @reboot stands alone: no fields after it"),
    ("preview from the year 9999", {"preview_from": datetime(9999, 12, 31, 23, 59, tzinfo=UTC)},
     "refused: preview_from: must lie in the years 1970 to 9000 (UTC)"),
    ("preview from the year 1", {"preview_from": datetime(1, 1, 1, tzinfo=UTC)},
     "refused: preview_from: must lie in the years 1970 to 9000 (UTC)"),
    ("macro with fields", {"schedule": "@daily 5"},
     "refused: schedule: the macro @daily stands alone"),
    ("name in the wrong field", {"schedule": "0 0 mon * *"},
     "refused: schedule: day-of-month: 'mon' is not a number"),
    ("empty list item", {"schedule": "1,,2 * * * *"},
     "refused: schedule: minute: empty item in the list '1,,2'"),
    ("step larger than the field", {"schedule": "*/60 * * * *"},
     "refused: schedule: minute: step 60 in '*/60' is larger than 59"),
    # template parameters: refused...
    ("url with a space and a command", {"params": {"url": "https://x.example/;rm -rf /"}},
     "refused: params: url: may hold only URL characters"),
    ("url with a newline entry", {"params": {"url": "https://x.example/\n* * * * * root evil"}},
     "refused: params: url: may hold only URL characters"),
    ("url with backticks", {"params": {"url": "https://x.example/`id`"}},
     "refused: params: url: may hold only URL characters"),
    ("url with a bare percent", {"params": {"url": "https://x.example/100%"}},
     "refused: params: url: has a '%' not followed by two hex digits"),
    ("file url", {"params": {"url": "file:///etc/shadow"}},
     "refused: params: url: must be an http:// or https:// URL"),
    ("url with credentials", {"params": {"url": "https://root:pw@x.example/"}},
     "refused: params: url: must not carry credentials"),
    ("unicode look-alike host", {"params": {"url": "https://exampl\u0435.com/"}},
     "refused: params: url: may hold only URL characters"),
    ("unknown parameter", {"params": {"url": "https://x.example/", "shell": "sh"}},
     "refused: params: shell: Extra inputs are not permitted"),
    ("unknown template", {"template": "rm"}, "refused: template: Input should be"),
    ("unknown command field", {"command": "id"}, "refused: command: Extra inputs"),
    ("path traversal", {"template": "backup-dir",
                        "params": {"source": "/srv/www/../../etc", "dest": "/srv/backups"}},
     "refused: params: source: must be normalised"),
    ("relative path", {"template": "backup-dir", "params": {"source": "srv", "dest": "/srv"}},
     "refused: params: source: must be an absolute path"),
    ("path with a substitution", {"template": "backup-dir",
                                  "params": {"source": "/srv/$(id)", "dest": "/srv/backups"}},
     "refused: params: source: may hold only letters, digits"),
    ("path outside the roots", {"template": "backup-dir",
                                "params": {"source": "/etc", "dest": "/var/backups"}},
     "refused: params.source: /etc is not inside an allowed directory"),
    ("archive name with a command", {"template": "backup-dir",
                                     "params": {"source": "/srv", "dest": "/srv",
                                                "name": "x; rm -rf /"}},
     "refused: params: name: String should match pattern"),
    ("logrotate of /etc/shadow", {"template": "logrotate", "params": {"config": "/etc/shadow"}},
     "refused: params.config: /etc/shadow is not inside an allowed directory"),
    ("script outside its directory", {"template": "script",
                                      "params": {"name": "../../bin/sh"}},
     "refused: params: name: String should match pattern"),
    ("missing script", {"template": "script", "params": {"name": "nope.sh"}},
     "refused: params.name: no script 'nope.sh'"),
    ("script argument with a newline", {"template": "script",
                                        "params": {"name": SCRIPT, "args": ["a\nb"]}},
     "refused: params: args.0: must be printable"),
    ("backslash before percent", {"template": "script",
                                  "params": {"name": SCRIPT, "args": ["a\\%b"]}},
     "refused: a backslash right before '%' cannot be written in a cron line"),
    ("comment with a newline entry", {"comment": "x\n* * * * * root evil"},
     "refused: comment: must be one printable line"),
    # strict types: JSON's own, no coercion
    ("retries: true", {"params": {**HEALTH, "retries": True}},
     "refused: params: retries: Input should be a valid integer"),
    ("timeout as a string", {"params": {**HEALTH, "timeout_s": "60"}},
     "refused: params: timeout_s: Input should be a valid integer"),
    ("timeout as a float", {"params": {**HEALTH, "timeout_s": 60.0}},
     "refused: params: timeout_s: Input should be a valid integer"),
    ("force: 'yes'", {"template": "logrotate", "params": {"config": "/etc/x", "force": "yes"}},
     "refused: params: force: Input should be a valid boolean"),
    ("script argument as a number", {"template": "script", "params": {"name": SCRIPT,
                                                                      "args": [1]}},
     "refused: params: args.0: Input should be a valid string"),
    ("script arguments as one string", {"template": "script", "params": {"name": SCRIPT,
                                                                         "args": "a b"}},
     "refused: params: args: Input should be a valid tuple"),
    ("dry_run: 'yes'", {"dry_run": "yes"}, "refused: dry_run: Input should be a valid boolean"),
    ("dry_run: 1", {"dry_run": 1}, "refused: dry_run: Input should be a valid boolean"),
    ("preview as a string", {"preview": "3"}, "refused: preview: Input should be a valid integer"),
    ("preview_from as seconds", {"preview_from": 1743249600},
     "refused: preview_from: must be an ISO 8601 date and time with a zone, as a string"),
    ("preview_from without a zone", {"preview_from": "2025-03-29T12:00:00"},
     "refused: preview_from: timestamp must carry a timezone"),
    ("comment as a number", {"comment": 5}, "refused: comment: Input should be a valid string"),
    # users
    ("root", {"user": "root"}, "refused: user: 'root' is root, and this agent runs no cron "
     "entries as root"),
    ("user not allowed", {"user": "www-data"}, "refused: user: 'www-data' is not allowed"),
    ("unknown user", {"user": "nosuchuser"},
     "refused: user: 'nosuchuser' does not exist on this server"),
    ("user with a space", {"user": "nobody root"}, "refused: user: String should match"),
    # free-form commands
    ("free-form, tenant not enabled", {"template": "freeform", "params": {"command": "id"}},
     "refused: free-form cron commands are disabled for tenant 'default'"),
    ("free-form, no approval", {"template": "freeform", "params": {"command": "id"},
                                "tenant": "ops"},
     "refused: free-form cron command without approval"),
    ("free-form, approved by its requester", {"template": "freeform",
                                              "params": {"command": "id"}, "tenant": "ops",
                                              "approvals": approved("olivia")},
     "refused: free-form cron command without approval"),
    ("free-form with a second line", {"template": "freeform",
                                      "params": {"command": "id\n* * * * * root evil"},
                                      "tenant": "ops", "approvals": approved("otto")},
     "refused: params: command: must be one printable line"),
]

NEUTRALISED: list[tuple[str, dict[str, Any], str]] = [
    ("substitution and & in a URL stay one quoted argument",
     {"params": {"url": "https://x.example/?a=$(id)&b=1"}},
     f"line: 0 3 * * * {CURL} 'https://x.example/?a=$(id)&b=1'"),
    ("percent-encoding in a URL is escaped for cron",
     {"params": {"url": "https://x.example/a%20b%0A"}},
     f"line: 0 3 * * * {CURL} https://x.example/a\\%20b\\%0A"),
    ("shell syntax in script arguments stays literal",
     {"template": "script", "params": {"name": SCRIPT, "args": [
         "; rm -rf /", "$(id)", "`id`", "> /etc/passwd", "&& id", "50%", "it's", ""]}},
     "line: 0 3 * * * nobody {scripts}/rotate-cache.sh '; rm -rf /' '$(id)' '`id`' "
     "'> /etc/passwd' '&& id' 50\\% 'it'\"'\"'s' ''"),
    ("an approved free-form command is written as typed, % escaped",
     {"template": "freeform", "params": {"command": "date +%F >> /tmp/dates"},
      "tenant": "ops", "approvals": approved("otto"), "user": "daemon"},
     "line: 0 3 * * * daemon date +\\%F >> /tmp/dates"),
]


def test_the_hostile_table_is_big_enough() -> None:
    schedules = [case for case in HOSTILE if "schedule" in case[1]]
    assert len(schedules) >= 20 and len(HOSTILE) + len(NEUTRALISED) >= 40


@pytest.mark.parametrize("fields, expected", [c[1:] for c in HOSTILE],
                         ids=[c[0] for c in HOSTILE])
def test_hostile_input_is_refused_with_its_reason(settings: AgentSettings,
                                                  fields: dict[str, Any], expected: str) -> None:
    result = outcome(settings, **fields)
    assert result.startswith(expected), result


@pytest.mark.parametrize("fields, expected", [c[1:] for c in NEUTRALISED],
                         ids=[c[0] for c in NEUTRALISED])
def test_hostile_values_that_are_data_become_one_quoted_argument(
        settings: AgentSettings, fields: dict[str, Any], expected: str) -> None:
    assert outcome(settings, **fields) == expected.format(scripts=settings.cron_script_dir)


def cron_splits(command: str) -> tuple[str, str]:
    """(what /bin/sh runs, the job's stdin) for a cron command field, as cronie's
    do_command.c splits it: ``\\%`` is a literal %, the first bare % starts stdin."""
    out: list[str] = []
    escaped = False
    for i, ch in enumerate(command):
        if escaped:
            escaped = False
            if ch == "%":
                out[-1] = "%"
                continue
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            return "".join(out), command[i + 1:].replace("%", "\n")
        out.append(ch)
    return "".join(out), ""


def test_the_shell_cron_starts_gets_exactly_the_arguments(settings: AgentSettings,
                                                          tmp_path: Path) -> None:
    script = settings.cron_script_dir / SCRIPT
    script.write_text('#!/bin/sh\nfor a in "$@"; do printf \'%s\\0\' "$a"; done\n')
    args = [f"$(touch {tmp_path}/pwned)", f"`touch {tmp_path}/pwned`", "; touch pwned", "&&",
            "| tee x", "> out", "100%", "%%", "%s%n", "it's", "\\", "a\\b", "*", "~", "{a,b}",
            "-rf", "", "$HOME", "\u00e9\u0435"]
    for some in (args[:10], args[10:]):  # at most 16 arguments per entry
        result = outcome(settings, template="script", params={"name": SCRIPT, "args": some})
        assert result.startswith("line: 0 3 * * * nobody "), result
        shell, stdin = cron_splits(result.split(" nobody ", 1)[1])
        assert stdin == ""
        done = subprocess.run(["/bin/sh", "-c", shell], cwd=tmp_path, capture_output=True,
                              check=True, timeout=10, env={"PATH": "/usr/bin:/bin"})
        assert done.stdout.decode().split("\0")[:-1] == some
    assert not list(tmp_path.glob("pwned*")) and not (tmp_path / "out").exists()


def test_a_symlink_out_of_the_roots_is_refused(settings: AgentSettings) -> None:
    source = str(settings.cron_path_roots[0] / "escape")  # -> tmp/etc, outside the roots
    dest = str(settings.cron_path_roots[0] / "backups")
    result = outcome(settings, template="backup-dir", params={"source": source, "dest": dest})
    assert result.startswith(f"refused: params.source: {source} is not inside"), result


def test_a_script_others_may_write_is_refused(settings: AgentSettings) -> None:
    (settings.cron_script_dir / SCRIPT).chmod(0o777)
    result = outcome(settings, template="script", params={"name": SCRIPT})
    assert result == f"refused: params.name: '{SCRIPT}' is writable by group or others"


def test_templates_render_to_exact_lines(settings: AgentSettings) -> None:
    srv = settings.cron_path_roots[0]
    backup = outcome(settings, "@daily", "backup-dir",
                     {"source": f"{srv}/www", "dest": f"{srv}/backups", "name": "www"})
    assert backup == (f"line: @daily nobody /usr/bin/tar --create --gzip "
                      f"--file={srv}/backups/www.tar.gz --directory={srv}/www -- .")
    rotate = outcome(settings, "15 4 * * *", "logrotate",
                     {"config": f"{settings.cron_logrotate_dir}/nginx", "force": True})
    assert rotate == (f"line: 15 4 * * * nobody /usr/sbin/logrotate --force "
                      f"{settings.cron_logrotate_dir}/nginx")
    health = outcome(settings, "*/5 * * * *", params={"url": "https://x.example/h",
                                                      "timeout_s": 3, "retries": 2},
                     user="daemon")
    assert health == ("line: */5 * * * * daemon /usr/bin/curl --fail --silent --show-error "
                      "--proto =http,https --output /dev/null --max-time 3 --retry 2 --url "
                      "https://x.example/h")


def test_root_needs_the_agent_to_allow_it(settings: AgentSettings) -> None:
    allowing = settings.model_copy(update={"cron_allow_root": True})
    assert outcome(allowing, user="root").startswith("line: 0 3 * * * root /usr/bin/curl")


# -- schedules and fire times ---------------------------------------------------------------

FIRES: list[tuple[str, str, str, list[str]]] = [
    ("*/15 * * * *", "UTC", "2025-01-01T00:07:00+00:00",
     ["2025-01-01T00:15:00+00:00", "2025-01-01T00:30:00+00:00", "2025-01-01T00:45:00+00:00",
      "2025-01-01T01:00:00+00:00"]),
    ("0 9 * * mon-fri", "UTC", "2025-01-03T10:00:00+00:00",  # a Friday
     ["2025-01-06T09:00:00+00:00", "2025-01-07T09:00:00+00:00", "2025-01-08T09:00:00+00:00"]),
    # day-of-month and day-of-week both restricted: either one (Fridays and the 13th)
    ("0 0 13 * 5", "UTC", "2025-06-01T00:00:00+00:00",
     ["2025-06-06T00:00:00+00:00", "2025-06-13T00:00:00+00:00", "2025-06-20T00:00:00+00:00",
      "2025-06-27T00:00:00+00:00", "2025-07-04T00:00:00+00:00", "2025-07-11T00:00:00+00:00",
      "2025-07-13T00:00:00+00:00"]),
    # a day field starting with '*': both (Mondays that fall on odd days), as cron does
    ("0 0 */2 * 1", "UTC", "2025-01-01T00:00:00+00:00",
     ["2025-01-13T00:00:00+00:00", "2025-01-27T00:00:00+00:00", "2025-02-03T00:00:00+00:00",
      "2025-02-17T00:00:00+00:00"]),
    ("@monthly", "Europe/Berlin", "2025-01-15T12:00:00+01:00",
     ["2025-02-01T00:00:00+01:00", "2025-03-01T00:00:00+01:00", "2025-04-01T00:00:00+02:00"]),
    ("@yearly", "UTC", "2025-01-01T00:00:00+00:00",
     ["2026-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"]),
    ("0 0 29 2 *", "UTC", "2025-01-01T00:00:00+00:00",
     ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]),
    ("0 0 29 2 sun", "UTC", "2025-01-01T00:00:00+00:00",  # OR: every Sunday in February too
     ["2025-02-02T00:00:00+00:00", "2025-02-09T00:00:00+00:00"]),
    ("0 0 29 2 */7", "UTC", "2025-01-01T00:00:00+00:00",  # AND: a Sunday 29 February
     ["2032-02-29T00:00:00+00:00", "2060-02-29T00:00:00+00:00"]),
    ("@reboot", "UTC", "2025-01-01T00:00:00+00:00", []),
    # spring forward: the 02:00-03:00 hour does not exist
    ("30 2 * * *", "Europe/Berlin", "2025-03-29T12:00:00+01:00",
     ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]),
    ("30 2 * * *", "America/New_York", "2025-03-08T12:00:00-05:00",
     ["2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"]),
    ("0,30 2 * * *", "America/New_York", "2025-03-09T00:00:00-05:00",  # both caught up at 3
     ["2025-03-09T03:00:00-04:00", "2025-03-10T02:00:00-04:00", "2025-03-10T02:30:00-04:00"]),
    ("0 3 * * *", "Europe/Berlin", "2025-03-30T00:00:00+01:00", ["2025-03-30T03:00:00+02:00"]),
    ("*/30 * * * *", "Europe/Berlin", "2025-03-30T01:00:00+01:00",  # wildcard: skipped
     ["2025-03-30T01:30:00+01:00", "2025-03-30T03:00:00+02:00", "2025-03-30T03:30:00+02:00"]),
    ("30 * * * *", "America/New_York", "2025-03-09T00:00:00-05:00",
     ["2025-03-09T00:30:00-05:00", "2025-03-09T01:30:00-05:00", "2025-03-09T03:30:00-04:00"]),
    ("@daily", "America/Santiago", "2025-09-06T12:00:00-04:00",  # midnight does not exist
     ["2025-09-07T01:00:00-03:00", "2025-09-08T00:00:00-03:00"]),
    # fall back: 01:00-02:00 (New York) and 02:00-03:00 (Berlin) happen twice
    ("30 1 * * *", "America/New_York", "2025-11-01T12:00:00-04:00",
     ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]),
    ("30 1 * * *", "America/New_York", "2025-11-02T01:45:00-04:00",  # between the two 01:30
     ["2025-11-03T01:30:00-05:00"]),
    ("0 2 * * *", "America/New_York", "2025-11-01T12:00:00-04:00",
     ["2025-11-02T02:00:00-05:00"]),
    ("30 2 * * *", "Europe/Berlin", "2025-10-25T12:00:00+02:00",
     ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]),
    ("*/30 * * * *", "Europe/Berlin", "2025-10-26T01:00:00+02:00",  # wildcard: twice
     ["2025-10-26T01:30:00+02:00", "2025-10-26T02:00:00+02:00", "2025-10-26T02:30:00+02:00",
      "2025-10-26T02:00:00+01:00", "2025-10-26T02:30:00+01:00", "2025-10-26T03:00:00+01:00"]),
    ("@hourly", "America/New_York", "2025-11-02T00:00:00-04:00",
     ["2025-11-02T01:00:00-04:00", "2025-11-02T01:00:00-05:00", "2025-11-02T02:00:00-05:00",
      "2025-11-02T03:00:00-05:00"]),
    ("*/30 23 * * *", "America/Santiago", "2025-04-05T12:00:00-03:00",  # repeated 23:00 hour
     ["2025-04-05T23:00:00-03:00", "2025-04-05T23:30:00-03:00", "2025-04-05T23:00:00-04:00",
      "2025-04-05T23:30:00-04:00"]),
    # a clock jump, not daylight saving: Samoa skipped 30 December 2011; nothing caught up
    ("0 12 * * *", "Pacific/Apia", "2011-12-29T13:00:00-10:00",
     ["2011-12-31T12:00:00+14:00", "2012-01-01T12:00:00+14:00"]),
]


@pytest.mark.parametrize("expr, zone, start, expected", FIRES,
                         ids=[f"{e} {z} {s[:10]}" for e, z, s, _ in FIRES])
def test_next_fire_times_are_exact(expr: str, zone: str, start: str,
                                   expected: list[str]) -> None:
    times = next_fire_times(expr, zone, len(expected) or 3, datetime.fromisoformat(start))
    assert [t.isoformat() for t in times] == expected


@pytest.mark.parametrize("expr", ["*/15 * * * *", "0 9 * * mon-fri", "0 0 13 * 5", "@monthly",
                                  "0 0 29 2 *", "5 4 * jan,jul *", "0 */6 1-7 * *"])
def test_without_daylight_saving_croniter_agrees(expr: str) -> None:
    start = datetime(2025, 1, 1, 0, 7, tzinfo=UTC)
    it = croniter(expr, start)
    theirs = [it.get_next(datetime) for _ in range(8)]
    assert next_fire_times(expr, "UTC", 8, start) == theirs


def test_croniter_misplaces_times_around_daylight_saving_so_we_do_not_use_it_there() -> None:
    berlin = next_fire_times("30 2 * * *", "Europe/Berlin", 1,
                             datetime(2025, 3, 29, 12, tzinfo=UTC))
    it = croniter("30 2 * * *", datetime(2025, 3, 29, 13, tzinfo=ZoneInfo("Europe/Berlin")))
    theirs = it.get_next(datetime)
    assert berlin[0].astimezone(UTC) == datetime(2025, 3, 30, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert theirs.astimezone(UTC) != berlin[0].astimezone(UTC)


def test_parse_keeps_macros_and_normalises_whitespace() -> None:
    assert parse("@weekly").text == "@weekly"
    assert parse("0  3\t* * SUN").weekdays == frozenset({0})
    assert parse("0 0 * * 7").weekdays == frozenset({0})
    assert parse("@hourly").wildcard and not parse("@daily").wildcard
    assert parse("0 0 30 2 1").months == frozenset({2})  # fires on Mondays in February
    with pytest.raises(CronSyntaxError, match="never fires"):
        parse("0 0 31 2,4 *")


@pytest.mark.parametrize("start", ["9999-12-31T23:59:00+00:00", "0001-01-01T00:00:00+00:00"])
def test_a_preview_from_the_calendars_ends_is_a_clear_error(settings: AgentSettings,
                                                            start: str) -> None:
    with pytest.raises(ValidationError, match="preview_from\n  Value error, must lie in the "
                                              "years 1970 to 9000"):
        run(settings, "CRON_LIST", preview_from=start)
    with pytest.raises(OpsError, match=re.escape("preview_from: no fire times can be computed "
                                                 f"from {start}: the search runs off the")):
        cron.preview("0 0 * * *", ZoneInfo("Pacific/Kiritimati"), 2,
                     datetime.fromisoformat(start))
    edge = run(settings, "CRON_LIST", preview_from="9000-12-31T23:59:00+00:00")
    assert edge["entries"] == []


@pytest.mark.parametrize("kind, params, where", [
    ("CRON_LIST", {"owned_only": "yes"}, "owned_only"),
    ("CRON_LIST", {"owned_only": 1}, "owned_only"),
    ("CRON_LIST", {"preview": "2"}, "preview"),
    ("CRON_LIST", {"preview": True}, "preview"),
    ("CRON_DELETE", {"entry_id": "a" * 32, "dry_run": "true"}, "dry_run"),
    ("CRON_UPDATE", {"entry_id": "a" * 32, "comment": 0}, "comment"),
])
def test_cron_params_refuse_coercion(settings: AgentSettings, kind: str,
                                     params: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        run(settings, kind, **params)
    assert caught.value.errors()[0]["loc"][2:] == (where,)


def test_cron_params_take_what_json_carries(settings: AgentSettings) -> None:
    """A body as the API parses it from JSON: ints, bools, strings, lists, null, and an
    instant as an ISO string."""
    body = {"schedule": "30 2 * * *", "template": "script", "dry_run": True, "preview": 2,
            "preview_from": "2025-03-29T12:00:00Z", "user": None, "comment": "c",
            "params": {"name": SCRIPT, "args": ["a", "b"]}}
    done = run(settings, "CRON_CREATE", **body)
    assert done["next"] == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]
    assert done["line"].endswith(f"{SCRIPT} a b")
    listed = run(settings, "CRON_LIST", preview=0, owned_only=False,
                 preview_from="2025-03-29T12:00:00+01:00")
    assert listed["entries"] == []


def test_next_fire_times_needs_an_aware_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire_times("* * * * *", "UTC", 1, datetime(2025, 1, 1))


# -- the handlers, on a temporary cron directory ---------------------------------------------

FOREIGN = ("# Debian's own\nMAILTO=root\n30 3 * * 0 root test -e /run/systemd/system || "
           "SERVICE_MODE=1 /usr/lib/x86_64-linux-gnu/e2fsprogs/e2scrub_all_cron\n"
           "10 3 * * * root  echo 50% done\n")


def run(settings: AgentSettings, kind: str, **params: Any) -> dict[str, Any]:
    """One command through its handler (bound to ``settings``, as the executor binds it)."""
    async def report(_fraction: float, _message: str) -> None:
        return None

    handler = bind(OpsContext(settings))[kind]
    return asyncio.run(handler(command(kind, **params), report))


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())
            if not p.name.startswith(".")}


def test_create_writes_one_owned_file_cron_accepts(settings: AgentSettings) -> None:
    done = run(settings, "CRON_CREATE", schedule="30 2 * * *",
                     template="curl-healthcheck", params=HEALTH, comment="site up?", preview=2)
    path = Path(done["path"])
    assert path.name == f"fleetdeck-{done['entry_id']}" and done["written"]
    assert done["line"] == f"30 2 * * * {CURL} https://example.com/health"
    assert done["timezone"] == "Europe/Berlin" and len(done["next"]) == 2
    text = path.read_text()
    assert text.endswith(done["line"] + "\n") and "SHELL=/bin/sh\n" in text
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o644
    if os.geteuid() == 0:
        assert info.st_uid == 0 and info.st_gid == 0
    entry = owned_entry(path.name, text)
    assert entry is not None and entry.template == "curl-healthcheck"
    assert entry.params == {"url": "https://example.com/health", "timeout_s": 10, "retries": 0}
    assert check_text(text, lambda _u: True, owned=True) == []
    # no temporary file left, and no lock file: the lock is the directory's own flock
    assert [p.name for p in settings.cron_dir.iterdir() if p.name.startswith(".")] == []


def test_dry_run_returns_the_line_and_fire_times_and_writes_nothing(
        settings: AgentSettings) -> None:
    (settings.cron_dir / "e2scrub_all").write_text(FOREIGN)
    before = snapshot(settings.cron_dir)
    done = run(settings, "CRON_CREATE", schedule="30 2 * * *", template="curl-healthcheck",
                     params=HEALTH, dry_run=True, preview=3)
    assert done["dry_run"] and not done["written"]
    assert done["line"] == f"30 2 * * * {CURL} https://example.com/health"
    assert len(done["next"]) == 3
    assert snapshot(settings.cron_dir) == before
    around = run(settings, "CRON_CREATE", schedule="30 2 * * *", template="curl-healthcheck",
                 params=HEALTH, dry_run=True, preview=2,
                 preview_from=datetime(2025, 3, 29, 12, tzinfo=UTC))
    assert around["next"] == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]
    assert snapshot(settings.cron_dir) == before


def test_a_dry_run_writes_nothing_in_a_fresh_cron_directory_and_takes_no_lock(
        settings: AgentSettings) -> None:
    before = os.stat(settings.cron_dir)
    with cron.locked(settings.cron_dir):  # a writer holds the lock: dry runs do not wait
        done = run(settings, "CRON_CREATE", schedule="@daily", template="curl-healthcheck",
                   params=HEALTH, dry_run=True)
        assert done["dry_run"] and not done["written"] and done["before"] is None
        with pytest.raises(OpsError, match=f"no FleetDeck cron entry {'b' * 32}"):
            run(settings, "CRON_UPDATE", entry_id="b" * 32, schedule="@daily",
                template="curl-healthcheck", params=HEALTH, dry_run=True)
    assert list(settings.cron_dir.iterdir()) == []  # no lock file, no temporary file
    after = os.stat(settings.cron_dir)
    assert (after.st_mtime_ns, after.st_nlink) == (before.st_mtime_ns, before.st_nlink)


def test_the_lock_excludes_other_writers_without_a_file(settings: AgentSettings) -> None:
    other = os.open(settings.cron_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with cron.locked(settings.cron_dir):
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on leaving
    finally:
        os.close(other)
    made = run(settings, "CRON_CREATE", schedule="@daily", template="curl-healthcheck",
               params=HEALTH)
    assert [p.name for p in settings.cron_dir.iterdir()] == [Path(made["path"]).name]


def test_list_marks_owned_and_foreign_entries(settings: AgentSettings) -> None:
    (settings.cron_dir / "e2scrub_all").write_text(FOREIGN)
    (settings.cron_dir / "ignored.dpkg-old").write_text("* * * * * root evil\n")
    (settings.cron_tabs[0]).write_text("SHELL=/bin/sh\n17 * * * * root run-parts /etc/cron.hourly"
                                       "\n")
    assert settings.cron_spool_dir is not None
    (settings.cron_spool_dir / "alice").write_text("@reboot ~/start\n0 0 31 2 * never\n")
    made = run(settings, "CRON_CREATE", schedule="@daily", template="curl-healthcheck",
                     params=HEALTH)
    listed = run(settings, "CRON_LIST", preview=1)
    rows = {(Path(e["source"]).name, e["line_no"]): e for e in listed["entries"]}
    assert set(rows) == {("e2scrub_all", 3), ("e2scrub_all", 4), ("crontab", 2), ("alice", 1),
                         ("alice", 2), (Path(made["path"]).name, 5)}
    mine = rows[(Path(made["path"]).name, 5)]
    assert mine["owned"] and mine["entry_id"] == made["entry_id"] and not mine["modified"]
    assert mine["template"] == "curl-healthcheck" and len(mine["next"]) == 1
    foreign = rows[("e2scrub_all", 4)]
    assert not foreign["owned"] and foreign["user"] == "root"
    assert foreign["command"] == "echo 50% done"
    assert foreign["warning"].startswith("unescaped % in the command: cron turns the first %")
    assert "warning" not in rows[("e2scrub_all", 3)]
    assert rows[("alice", 1)]["user"] == "alice" and rows[("alice", 1)]["next"] == []
    assert "never fires" in rows[("alice", 2)]["error"]
    owned = run(settings, "CRON_LIST", owned_only=True)
    assert [e["entry_id"] for e in owned["entries"]] == [made["entry_id"]]


# (line in a system crontab, or in a user's crontab with ``user:``; what the listing says)
LISTED: list[tuple[str, str, dict[str, Any]]] = [
    ("no user, no command", "* * * * *",
     {"error": "cron skips this line: no user and no command after the schedule"}),
    ("macro, no user, no command", "@daily",
     {"error": "cron skips this line: no user and no command after the schedule"}),
    ("no command", "0 0 * * * root",
     {"error": "cron skips this line: no command after the user", "user": "root"}),
    ("no command in a user's crontab", "user:@hourly",
     {"error": "cron skips this line: no command after the schedule"}),
    ("bad schedule and no command", "0 24 * * *",
     {"error": "cron skips this line: hour: 24 is out of range 0-23"}),
    ("unescaped percent", "*/5 * * * * root echo 100% > /tmp/x",
     {"warning": PERCENT_WARNING, "command": "echo 100% > /tmp/x"}),
    ("unescaped percent in a user's crontab", "user:0 1 * * * date +%F",
     {"warning": PERCENT_WARNING}),
    ("escaped percent", "*/5 * * * * root echo 100\\% > /tmp/x", {"command":
                                                                 "echo 100\\% > /tmp/x"}),
]


@pytest.mark.parametrize("line, expected", [c[1:] for c in LISTED], ids=[c[0] for c in LISTED])
def test_list_says_why_cron_skips_a_line_and_warns_of_a_bare_percent(
        settings: AgentSettings, line: str, expected: dict[str, Any]) -> None:
    assert settings.cron_spool_dir is not None
    user_tab = line.startswith("user:")
    target = settings.cron_spool_dir / "alice" if user_tab else settings.cron_dir / "local"
    target.write_text(line.removeprefix("user:") + "\n")
    [item] = run(settings, "CRON_LIST", preview=2)["entries"]
    assert {k: item[k] for k in expected} == expected
    if "error" in expected:
        assert item["next"] == [] and "warning" not in item
    else:
        assert len(item["next"]) == 2 and "error" not in item
    if "warning" not in expected:
        assert "warning" not in item


SHADOW = ("root:$6$secret-hash:19000:0:99999:7:::\n"
          "* * * * * root echo shadow-line-as-an-entry\n")


def test_list_never_follows_a_symbolic_link_nor_reads_a_special_file(
        settings: AgentSettings, tmp_path: Path) -> None:
    shadow = tmp_path / "etc" / "shadow"
    shadow.write_text(SHADOW)
    assert settings.cron_spool_dir is not None
    (settings.cron_dir / "evil").symlink_to(shadow)
    (settings.cron_spool_dir / "mallory").symlink_to(shadow)
    settings.cron_tabs[0].symlink_to(shadow)
    os.mkfifo(settings.cron_dir / "pipe")  # opening it for reading would block
    (settings.cron_dir / "subdir").mkdir()
    (settings.cron_dir / "subdir" / "inner").write_text("* * * * * root inner\n")
    listed = run(settings, "CRON_LIST")
    assert listed["entries"] == [
        {"source": str(settings.cron_dir / "evil"), "owned": False,
         "error": "a symbolic link: not followed, its target is not read", "next": []},
        {"source": str(settings.cron_dir / "pipe"), "owned": False,
         "error": "not a regular file (FIFO): not read", "next": []},
        {"source": str(settings.cron_tabs[0]), "owned": False,
         "error": "a symbolic link: not followed, its target is not read", "next": []},
        {"source": str(settings.cron_spool_dir / "mallory"), "owned": False,
         "error": "a symbolic link: not followed, its target is not read", "next": []}]
    assert "secret" not in str(listed) and "shadow-line" not in str(listed)


def test_a_link_replacing_a_file_after_the_check_is_not_followed(
        settings: AgentSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shadow = tmp_path / "etc" / "shadow"
    shadow.write_text(SHADOW)
    link = settings.cron_dir / "swapped"
    link.symlink_to(shadow)
    regular = os.stat_result((stat.S_IFREG | 0o644, *[0] * 9))
    monkeypatch.setattr(Path, "lstat", lambda self: regular)  # the race: checked, then swapped
    with pytest.raises(cron.NotRegular, match="symbolic link"):
        cron.read_regular(link)


def test_list_reads_a_capped_part_of_a_huge_file(settings: AgentSettings) -> None:
    line = "0 0 * * * root /bin/true\n"
    many = settings.cron_dir / "many"
    many.write_text(line * (cron.MAX_FILE_ENTRIES + 10))
    huge = settings.cron_dir / "huge"
    huge.write_text("# " + "x" * cron.MAX_FILE_BYTES + "\n" + line)
    listed = run(settings, "CRON_LIST", preview=0)["entries"]
    from_many = [e for e in listed if e["source"] == str(many)]
    assert len(from_many) == cron.MAX_FILE_ENTRIES + 1
    assert from_many[-1] == {"source": str(many), "owned": False, "error": (
        f"only the first {cron.MAX_FILE_ENTRIES} entries are listed: the file has more"),
        "next": []}
    assert [e for e in listed if e["source"] == str(huge)] == [
        {"source": str(huge), "owned": False,
         "error": f"only the first {cron.MAX_FILE_BYTES} bytes are read: the file is larger",
         "next": []}]


def test_a_link_with_our_name_is_never_read_nor_changed(settings: AgentSettings,
                                                        tmp_path: Path) -> None:
    made = run(settings, "CRON_CREATE", schedule="@daily", template="curl-healthcheck",
               params=HEALTH)
    real = Path(made["path"])
    target = tmp_path / "elsewhere"
    real.rename(target)  # a genuine entry file, now reached only through a link
    link = settings.cron_dir / f"fleetdeck-{'c' * 32}"
    link.symlink_to(target)
    text = target.read_text()
    for kind, extra in [("CRON_DELETE", {}),
                        ("CRON_UPDATE", {"schedule": "@hourly", "template": "curl-healthcheck",
                                         "params": HEALTH})]:
        with pytest.raises(OpsError, match="is not a FleetDeck cron file: left alone"):
            run(settings, kind, entry_id="c" * 32, **extra)
    assert link.is_symlink() and target.read_text() == text
    listed = run(settings, "CRON_LIST")["entries"]
    assert listed == [{"source": str(link), "owned": False, "next": [],
                       "error": "a symbolic link: not followed, its target is not read"}]


def test_update_and_delete_touch_only_their_own_file(settings: AgentSettings) -> None:
    (settings.cron_dir / "e2scrub_all").write_text(FOREIGN)
    foreign = (settings.cron_dir / "e2scrub_all").read_bytes()
    made = run(settings, "CRON_CREATE", schedule="@daily", template="curl-healthcheck",
                     params=HEALTH)
    entry_id = made["entry_id"]
    changed = run(settings, "CRON_UPDATE", entry_id=entry_id, schedule="0 4 * * *",
                        template="logrotate",
                        params={"config": f"{settings.cron_logrotate_dir}/nginx"})
    assert changed["before"] == made["line"]
    assert changed["line"] == (f"0 4 * * * nobody /usr/sbin/logrotate "
                               f"{settings.cron_logrotate_dir}/nginx")
    assert Path(made["path"]).read_text().endswith(changed["line"] + "\n")
    dry = run(settings, "CRON_DELETE", entry_id=entry_id, dry_run=True)
    assert dry["before"] == changed["line"] and Path(made["path"]).exists()
    gone = run(settings, "CRON_DELETE", entry_id=entry_id)
    assert gone["removed"] and not Path(made["path"]).exists()
    assert snapshot(settings.cron_dir) == {"e2scrub_all": foreign}
    with pytest.raises(OpsError, match=f"no FleetDeck cron entry {entry_id}"):
        run(settings, "CRON_DELETE", entry_id=entry_id)


def entry_of(path: str) -> Any:
    entry = owned_entry(Path(path).name, Path(path).read_text())
    assert entry is not None
    return entry


def test_an_update_keeps_every_field_it_does_not_give(settings: AgentSettings) -> None:
    params = {"url": "https://example.com/health", "timeout_s": 3, "retries": 2}
    made = run(settings, "CRON_CREATE", schedule="@daily", template="curl-healthcheck",
               params=params, user="daemon", comment="site up?")
    entry_id = made["entry_id"]
    moved = run(settings, "CRON_UPDATE", entry_id=entry_id, schedule="0 4 * * *")
    assert moved["line"] == made["line"].replace("@daily", "0 4 * * *", 1)
    assert moved["before"] == made["line"]
    kept = entry_of(made["path"])
    assert (kept.schedule, kept.template, kept.params, kept.user, kept.comment) == (
        "0 4 * * *", "curl-healthcheck", params, "daemon", "site up?")
    run(settings, "CRON_UPDATE", entry_id=entry_id, comment=None, user=None)  # null: kept
    assert (entry_of(made["path"]).comment, entry_of(made["path"]).user) == ("site up?",
                                                                             "daemon")
    run(settings, "CRON_UPDATE", entry_id=entry_id, params={"url": "https://x.example/h"})
    assert entry_of(made["path"]).params == {"url": "https://x.example/h", "timeout_s": 10,
                                             "retries": 0}  # all the template's params
    run(settings, "CRON_UPDATE", entry_id=entry_id, comment="", user="nobody")
    cleared = entry_of(made["path"])
    assert (cleared.schedule, cleared.comment, cleared.user) == ("0 4 * * *", "", "nobody")
    [listed] = run(settings, "CRON_LIST")["entries"]
    assert listed["comment"] == "" and not listed["modified"]


def test_an_update_checks_what_it_keeps_against_what_it_changes(
        settings: AgentSettings) -> None:
    made = run(settings, "CRON_CREATE", schedule="@daily", template="curl-healthcheck",
               params=HEALTH, comment="keep me")
    entry_id = made["entry_id"]
    with pytest.raises(OpsError, match="params: give the parameters of the template logrotate "
                                       r"\(the entry uses curl-healthcheck\)"):
        run(settings, "CRON_UPDATE", entry_id=entry_id, template="logrotate")
    with pytest.raises(OpsError, match=r"params\.url: Field required"):  # the current template
        run(settings, "CRON_UPDATE", entry_id=entry_id, params={"timeout_s": 5})
    with pytest.raises(OpsError, match="user: 'www-data' is not allowed"):
        run(settings, "CRON_UPDATE", entry_id=entry_id, user="www-data")
    assert Path(made["path"]).read_text().endswith(made["line"] + "\n")
    dry = run(settings, "CRON_UPDATE", entry_id=entry_id, template="logrotate", dry_run=True,
              params={"config": f"{settings.cron_logrotate_dir}/nginx"})
    assert dry["line"] == f"@daily nobody /usr/sbin/logrotate {settings.cron_logrotate_dir}/nginx"
    assert dry["before"] == made["line"] and entry_of(made["path"]).comment == "keep me"


def test_a_file_with_our_name_but_not_our_marker_is_left_alone(
        settings: AgentSettings) -> None:
    impostor = settings.cron_dir / f"fleetdeck-{'a' * 32}"
    impostor.write_text("* * * * * root do-not-touch\n")
    for kind, extra in [("CRON_DELETE", {}),
                        ("CRON_UPDATE", {"schedule": "@daily", "template": "curl-healthcheck",
                                         "params": HEALTH})]:
        with pytest.raises(OpsError, match="is not a FleetDeck cron file: left alone"):
            run(settings, kind, entry_id="a" * 32, **extra)
    assert impostor.read_text() == "* * * * * root do-not-touch\n"


def test_a_file_cron_would_refuse_is_rolled_back(settings: AgentSettings,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    made = run(settings, "CRON_CREATE", schedule="@daily", template="curl-healthcheck",
                     params=HEALTH)
    before = snapshot(settings.cron_dir)
    fake = tmp_path / "bin" / "crontab"  # cronie's crontab, refusing everything
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n[ \"$1\" = -V ] && { echo 'cronie 1.7.2'; exit 0; }\n"
                    "echo \"bad minute\" >&2; exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    with pytest.raises(OpsError, match="cron would not accept the file, nothing changed: "
                                       "crontab -T: bad minute"):
        run(settings, "CRON_CREATE", schedule="@hourly", template="curl-healthcheck",
                  params=HEALTH)
    with pytest.raises(OpsError, match="crontab -T: bad minute"):
        run(settings, "CRON_UPDATE", entry_id=made["entry_id"], schedule="@hourly",
                  template="curl-healthcheck", params=HEALTH)
    assert snapshot(settings.cron_dir) == before


def test_the_strict_check_mirrors_cron() -> None:
    def exists(user: str) -> bool:
        return user in {"root", "nobody"}

    good = "SHELL=/bin/sh\n# note\n@daily nobody /bin/true\n*/5 * * * * root echo \\%\n"
    assert check_text(good, exists, owned=True) == []
    assert check_text("@daily nobody /bin/true", exists, owned=True) == [
        "the last line has no newline (cron ignores it)"]
    assert check_text("0 0 30 2 * root x\n* * * * * ghost x\n0 0 * * * root\n"
                      "0 0 * * * root echo 50%\n* * * * *\n", exists, owned=True) == [
        "line 1: bad schedule: never fires: February has no day 30",
        "line 2: user 'ghost' does not exist",
        "line 3: no command after the user",
        "line 4: unescaped % (cron would cut the command there)",
        "line 5: no user and no command after the schedule"]
