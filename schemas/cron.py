"""Cron manager commands: CRON_LIST, CRON_CREATE, CRON_UPDATE, CRON_DELETE.

A cron entry is never a command line: it is a ``schedule``, a ``template`` from the allowlist
and the template's typed ``params`` (one model per template in :data:`TEMPLATE_PARAMS`). The
agent renders the template into an argument list and quotes each element, so no parameter
can add a command, a redirect or a substitution. The checks here are what a model can know
(types, bounds, character sets); the agent adds its own configuration (allowed users and
directories, whether free-form commands are enabled for the tenant) and parses the schedule
fully (``agent/ops/cronexpr.py``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from schemas.envelope import UtcDatetime

#: longest schedule text (five fields with long lists still fit)
MAX_SCHEDULE = 100
#: most fire times a preview returns
MAX_PREVIEW = 50
#: fire times returned when the command does not ask for a number
DEFAULT_PREVIEW = 5

_SCHEDULE_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                            "*/,-@ \t")


def schedule_problem(text: str) -> str | None:
    """Why ``text`` cannot be a schedule at the character level, or None."""
    if not text.strip():
        return "the schedule is empty"
    if len(text) > MAX_SCHEDULE:
        return f"the schedule is longer than {MAX_SCHEDULE} characters"
    for ch in text:
        if ch in _SCHEDULE_CHARS:
            continue
        if not ch.isascii():
            return (f"character {ch!r} (U+{ord(ch):04X}) is not allowed: a schedule is plain "
                    "ASCII")
        if not ch.isprintable():
            return f"control character {ch!r} is not allowed: a schedule is one line"
        return (f"character {ch!r} is not allowed in a schedule (only digits, names, "
                "* , - / @ and spaces)")
    return None


def _schedule(text: str) -> str:
    problem = schedule_problem(text)
    if problem:
        raise ValueError(problem)
    return " ".join(text.split())


Schedule = Annotated[str, Field(max_length=4 * MAX_SCHEDULE,
                                description="Five fields (minute hour day-of-month month "
                                "day-of-week) or a macro: @hourly @daily @midnight @weekly "
                                "@monthly @yearly @annually @reboot"),
                     AfterValidator(_schedule)]
EntryId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="Cron entry id")]
UserName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
                                description="Unix user the job runs as")]
Slug = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]

_PATH_CHARS = re.compile(r"^/[A-Za-z0-9._@+/-]{1,1023}$")


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    if not _PATH_CHARS.fullmatch(value):
        raise ValueError("may hold only letters, digits and . _ - + @ / (at most 1024)")
    if any(part in ("", ".", "..") for part in value.split("/")[1:]):
        raise ValueError("must be normalised: no empty, '.' or '..' segments, no trailing /")
    if any(part.startswith("-") for part in value.split("/")):
        raise ValueError("no path segment may start with '-'")
    return value


AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]

# RFC 3986 characters; anything else must be percent-encoded
_URL_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _url(value: str) -> str:
    if not _URL_CHARS.fullmatch(value):
        raise ValueError("may hold only URL characters (RFC 3986; percent-encode the rest)")
    if _PERCENT.search(value):
        raise ValueError("has a '%' not followed by two hex digits")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (cron files are world-readable)")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"has a bad port: {exc}") from None
    return value


HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(_url)]


def _argument(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable: no line breaks, tabs or control characters")
    return value


Argument = Annotated[str, Field(max_length=256), AfterValidator(_argument)]


class _TemplateParams(BaseModel):
    # strict: JSON's own types only; "60" is no number and true no count (bool is no int)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class BackupDirParams(_TemplateParams):
    """tar + gzip ``source`` into ``dest``/``name``.tar.gz (replaced on each run)."""

    source: AbsolutePath = Field(description="Directory to archive (under the agent's roots)")
    dest: AbsolutePath = Field(description="Directory the archive goes to (under the roots)")
    name: Slug = Field("backup", description="Archive name, without .tar.gz")


class LogrotateParams(_TemplateParams):
    """logrotate one configuration file from the agent's logrotate directory."""

    config: AbsolutePath = Field(description="logrotate configuration file")
    force: bool = Field(False, description="Rotate even when logrotate thinks it need not")


class HealthcheckParams(_TemplateParams):
    """curl a URL, failing (and mailing cron's output) on an HTTP error."""

    url: HttpUrl
    timeout_s: int = Field(10, ge=1, le=300, description="Longest the request may take")
    retries: int = Field(0, ge=0, le=10, description="Retries on transient errors")


class ScriptParams(_TemplateParams):
    """Run an executable from the agent's script directory with literal arguments."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$",
                      description="File name inside the script directory")
    # a JSON list becomes the tuple (strict would want a tuple); each element stays strict
    args: tuple[Argument, ...] = Field((), max_length=16, strict=False,
                                       description="Literal arguments")


class FreeformParams(_TemplateParams):
    """A shell command line as typed: off unless the agent enables it for the tenant, and
    then only in a command that carries an approval."""

    command: str = Field(min_length=1, max_length=1000)

    @field_validator("command")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be one printable line: no line breaks or control "
                             "characters")
        return value


#: template name -> model of its parameters (the UI's template picker reads this)
TEMPLATE_PARAMS: dict[str, type[_TemplateParams]] = {
    "backup-dir": BackupDirParams,
    "logrotate": LogrotateParams,
    "curl-healthcheck": HealthcheckParams,
    "script": ScriptParams,
    "freeform": FreeformParams,
}
TemplateName = Literal["backup-dir", "logrotate", "curl-healthcheck", "script", "freeform"]
Preview = Annotated[int | None, Field(None, ge=1, le=MAX_PREVIEW,
                                      description="How many next fire times to return")]
#: the instants a preview may start from: fire times are computed up to the year 9998
PREVIEW_FROM_RANGE = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9001, 1, 1, tzinfo=UTC))


def _preview_from(value: datetime | None) -> datetime | None:
    low, high = PREVIEW_FROM_RANGE
    if value is not None and not low <= value < high:
        raise ValueError(f"must lie in the years {low.year} to {high.year - 1} (UTC)")
    return value


def _iso_text(value: object) -> object:
    """JSON carries an instant as an ISO 8601 string: no number of seconds, no bool."""
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 date and time with a zone, as a string")
    return value


# not strict: an ISO string from JSON must become a datetime (_iso_text refuses the rest)
LaxUtcDatetime = Annotated[UtcDatetime, Strict(False)]
PreviewFrom = Annotated[LaxUtcDatetime | None, BeforeValidator(_iso_text),
                        AfterValidator(_preview_from), Field(
    None, description="Preview the fire times after this instant (default: now; years "
    "1970-9000)")]


def template_params(template: str, params: dict[str, Any]) -> _TemplateParams:
    """``params`` validated against ``template``'s model; ValueError names the field."""
    model = TEMPLATE_PARAMS.get(template)
    if model is None:
        raise ValueError(f"unknown template {template[:40]!r}")
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


class _CronParams(BaseModel):
    # strict, as the template parameters: no "60" for 60, no "yes" or 1 for true
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


def _one_line(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be one printable line")
    return value


Comment = Annotated[str, Field(max_length=200), AfterValidator(_one_line)]
TemplateParamsDict = Annotated[dict[str, Any], Field(max_length=16)]


class _EntryOptions(_CronParams):
    """What CRON_CREATE and CRON_UPDATE share besides the entry's fields."""

    dry_run: bool = Field(False, description="Return the line and fire times, write nothing")
    preview: Preview
    preview_from: PreviewFrom

    @field_validator("params", check_fields=False)
    @classmethod
    def _fit_template(cls, value: dict[str, Any] | None,
                      info: ValidationInfo) -> dict[str, Any] | None:
        template = info.data.get("template")
        if value is None or template is None:
            return value  # the template's own error is reported, or the agent checks
        return template_params(template, value).model_dump(mode="json")


class _EntryFields(_EntryOptions):
    schedule: Schedule
    template: TemplateName = Field(description="Job template from the allowlist")
    params: TemplateParamsDict = Field(default_factory=dict,
                                       description="The template's parameters")
    user: UserName | None = Field(None, description="Runs as (default: the agent's "
                                  "unprivileged cron user)")
    comment: Comment = Field("", description="Shown in listings")


class CronListParams(_CronParams):
    """Every entry in the cron directory and the crontabs, FleetDeck's marked as owned."""

    type: Literal["CRON_LIST"] = "CRON_LIST"
    preview: int = Field(DEFAULT_PREVIEW, ge=0, le=MAX_PREVIEW,
                         description="Next fire times per entry")
    preview_from: PreviewFrom
    owned_only: bool = Field(False, description="Only the entries FleetDeck manages")


class CronCreateParams(_EntryFields):
    """A new FleetDeck-owned entry (its id is the command's id)."""

    type: Literal["CRON_CREATE"] = "CRON_CREATE"


class CronUpdateParams(_EntryOptions):
    """Change a FleetDeck-owned entry: each of schedule, template, params, user and comment
    that is given (not omitted, not null) replaces the entry's; the others keep their
    current values (an empty ``comment`` clears it). A new template needs its ``params``."""

    type: Literal["CRON_UPDATE"] = "CRON_UPDATE"
    entry_id: EntryId
    schedule: Schedule | None = Field(None, description="New schedule (default: kept)")
    template: TemplateName | None = Field(None, description="New job template from the "
                                          "allowlist (default: kept)")
    params: TemplateParamsDict | None = Field(None, description="The template's parameters, "
                                              "all of them (default: kept)")
    user: UserName | None = Field(None, description="Runs as (default: kept)")
    comment: Comment | None = Field(None, description="Shown in listings (default: kept; "
                                    "empty: none)")


class CronDeleteParams(_CronParams):
    """Remove a FleetDeck-owned entry."""

    type: Literal["CRON_DELETE"] = "CRON_DELETE"
    entry_id: EntryId
    dry_run: bool = Field(False, description="Say what would be removed, remove nothing")
