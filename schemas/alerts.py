"""Alerting: rules, silences, alert transitions (``fd.alerts``) and operator actions
(``fd.alert-actions``).

A rule is evaluated per (rule, server, item) on every sample; that triple is one *alert*
with a stable id (:func:`alert_id`). Every change of an alert's state is an
:class:`AlertEvent` with a per-alert sequence number, so sinks and notifiers can drop
anything they have already seen (idempotent across worker restarts).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import re2
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from schemas.channels import CHANNELS
from schemas.envelope import ID_PATTERN, Envelope, UtcDatetime


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(StrEnum):
    PENDING = "pending"  # condition true, waiting for the rule's `for` duration
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"  # firing, and someone is on it
    RESOLVED = "resolved"  # condition cleared (also: pending that never fired)


ACTIVE_STATES = (AlertState.FIRING, AlertState.ACKNOWLEDGED)

RuleId = Annotated[str, Field(pattern=ID_PATTERN, description="Stable id of a rule")]
Op = Literal[">", ">=", "<", "<="]

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_EXPR = re.compile(r"^\s*(?P<channel>[a-z0-9_.]+)(?:\[(?P<item>[^\]]+)\])?\s*(?P<op>>=|<=|>|<)"
                   r"\s*(?P<threshold>-?[0-9]+(?:\.[0-9]+)?)(?:\s+for\s+(?P<for>\S+))?\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from a number or a text like ``90``, ``30s``, ``2m``, ``1h``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a text like 30s, 2m, 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration like 30s, 2m or 1h")
        seconds = float(match[1]) * _UNIT_S[match[2] or "s"]
    if not 0 <= seconds <= 30 * 86400:
        raise ValueError("a duration must be between 0 and 30 days")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration),
                     Field(ge=0, le=30 * 86400, description="Seconds (or 30s, 2m, 1h)")]

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str) -> Any:
    """Matcher regexes run on the live worker for every sample and every second, and come
    from API users: RE2 matches in linear time, so no pattern can stall the worker
    (Python's re backtracks: `(.|.)*x` takes seconds on a 20-character hostname)."""
    return re2.compile(pattern, options=_RE2_OPTIONS)


MatchLabel = Literal["server_id", "hostname", "tenant", "rule_id", "severity", "item"]


class Matcher(BaseModel):
    """``label op value``, like Alertmanager's matchers (regexes match the whole value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: MatchLabel
    op: Literal["=", "!=", "=~", "!~"] = "="
    value: str = Field(max_length=256)

    @model_validator(mode="after")
    def _regex_compiles(self) -> Matcher:
        if self.op in ("=~", "!~"):
            try:
                _regex(self.value)
            except re2.error as exc:
                why = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) \
                    else str(exc)
                raise ValueError(f"value: not a valid RE2 regular expression: {why}") from None
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        have = labels.get(self.label, "")
        if self.op == "=":
            return have == self.value
        if self.op == "!=":
            return have != self.value
        found = _regex(self.value).fullmatch(have) is not None
        return found if self.op == "=~" else not found


def matches_all(matchers: tuple[Matcher, ...] | list[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


class AlertRule(BaseModel):
    """One alerting rule.

    ``threshold``: ``channel op threshold`` held for ``for_s`` fires; it clears once the
    value is back past ``clear`` (hysteresis; defaults to ``threshold``).
    ``nodata``: the server (or, with ``process``, a watched process) sent nothing for
    ``silent_s``. ``process_down``: a watched process (``process``, ``*`` = any) is not
    running for ``for_s``.

    ``expr`` is a shorthand for threshold rules: ``cpu.total > 90 for 2m`` or
    ``fs.used_pct[/var] >= 95``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: RuleId
    name: str = Field("", max_length=200, description="Shown in the panel (default: the id)")
    kind: Literal["threshold", "nodata", "process_down"] = "threshold"
    channel: str | None = Field(None, description="Channel name, e.g. cpu.total")
    item: str | None = Field(
        None, max_length=256, description="Item of a per-item channel (a disk, a mount, a "
        "process): None = the total where the channel has one, else every item; * = every "
        "item; otherwise that item only")
    op: Op = ">"
    threshold: float | None = None
    clear: float | None = Field(None, description="Value past which a firing alert clears "
                                "(hysteresis); default: the threshold")
    for_s: Duration = Field(0.0, description="How long the condition must hold before firing")
    silent_s: Duration = Field(60.0, description="nodata: silence longer than this fires")
    process: str | None = Field(None, max_length=256, description="nodata / process_down: the "
                                "watched process (* = any, for process_down)")
    severity: Severity = Severity.WARNING
    match: list[Matcher] = Field(default_factory=list, max_length=32,
                                 description="Servers the rule applies to (all must match)")
    summary: str = Field("", max_length=500, description="Text for notifications")
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _expand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("for", "for_s", "silent", "silent_s"):
            if key in data:
                target = key if key.endswith("_s") else key + "_s"
                value = data.pop(key)
                try:
                    data[target] = parse_duration(value)
                except ValueError as exc:
                    raise ValueError(f"{target}: {exc}") from None
        expr = data.pop("expr", None)
        if expr is not None:
            match = _EXPR.fullmatch(str(expr))
            if not match:
                raise ValueError(f"expr: {expr!r} is not like 'cpu.total > 90 for 2m'")
            if data.get("kind", "threshold") != "threshold":
                raise ValueError("expr: only threshold rules have an expression")
            for key in ("channel", "op", "threshold", "item"):
                if key in data:
                    raise ValueError(f"{key}: give it in expr or as a field, not both")
            data["channel"], data["op"] = match["channel"], match["op"]
            data["threshold"] = float(match["threshold"])
            if match["item"]:
                data["item"] = match["item"]
            if match["for"]:
                if "for_s" in data:
                    raise ValueError("for_s: give 'for' in expr or as a field, not both")
                try:
                    data["for_s"] = parse_duration(match["for"])
                except ValueError as exc:
                    raise ValueError(f"expr: {exc}") from None
        return data

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, value: str | None) -> str | None:
        if value is not None and value not in CHANNELS:
            raise ValueError(f"unknown channel {value!r}; known: {', '.join(CHANNELS)}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> AlertRule:
        scoped = {m.label for m in self.match} - {"server_id", "hostname", "tenant"}
        if scoped:
            raise ValueError(f"match: rules match on server_id, hostname or tenant (not "
                             f"{', '.join(sorted(scoped))})")
        if self.kind != "threshold":
            for name in ("channel", "threshold", "clear", "item"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only threshold rules have one")
        if self.kind == "threshold":
            if self.channel is None:
                raise ValueError("channel: a threshold rule needs a channel")
            if self.threshold is None:
                raise ValueError("threshold: a threshold rule needs a threshold")
            if self.process is not None:
                raise ValueError("process: threshold rules take an item instead "
                                 "(e.g. proc.cpu_pct[nginx])")
            if self.item is not None and CHANNELS[self.channel].label is None:
                raise ValueError(f"item: {self.channel} has no items")
            if self.clear is not None:
                above = self.op in (">", ">=")
                if (above and self.clear > self.threshold) or (
                        not above and self.clear < self.threshold):
                    side = "at or below" if above else "at or above"
                    raise ValueError(f"clear: must be {side} the threshold {self.threshold}")
        elif self.kind == "process_down":
            if not self.process:
                raise ValueError("process: a process_down rule needs a process name (or *)")
        elif self.kind == "nodata" and self.silent_s < 1:
            raise ValueError("silent_s: a nodata rule needs at least 1 s")
        return self

    @property
    def title(self) -> str:
        return self.name or self.id

    @property
    def clear_at(self) -> float | None:
        return self.threshold if self.clear is None else self.clear

    def describe(self) -> str:
        """The condition in words, e.g. ``cpu.total > 90 for 120s``."""
        if self.kind == "nodata":
            what = f"process {self.process}" if self.process else "server"
            return f"{what} silent for {self.silent_s:g}s"
        if self.kind == "process_down":
            return f"process {self.process} down for {self.for_s:g}s"
        item = f"[{self.item}]" if self.item else ""
        held = f" for {self.for_s:g}s" if self.for_s else ""
        return f"{self.channel}{item} {self.op} {self.threshold:g}{held}"


class Silence(BaseModel):
    """Matching alerts still show (marked silenced) but send no notification."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(max_length=64)
    matchers: list[Matcher] = Field(min_length=1, max_length=32)
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    created_by: str = Field(min_length=1, max_length=120)
    comment: str = Field(min_length=1, max_length=1000)
    created_at: UtcDatetime

    @model_validator(mode="after")
    def _window(self) -> Silence:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at: must be after starts_at")
        return self

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


def alert_id(rule_id: str, server_id: str, item: str | None) -> str:
    """Stable id of the alert of (rule, server, item): URL-safe whatever the item holds."""
    raw = f"{rule_id}\x00{server_id}\x00{item or ''}".encode()
    return hashlib.blake2b(raw, digest_size=10).hexdigest()


class AlertEvent(Envelope):
    """An alert changed: its state, or its acknowledgement, silence or flapping flag.

    ``seq`` grows by one per event of the same alert; ``(alert_id, seq)`` identifies the
    event, so a redelivered one changes nothing twice."""

    kind: Literal["alert"] = "alert"
    alert_id: str = Field(max_length=64)
    seq: int = Field(ge=1)
    rule_id: RuleId
    rule_name: str = ""
    severity: Severity
    item: str | None = None
    hostname: str = ""
    state: AlertState
    previous: AlertState | None = None
    transition: str = Field(description="What happened: pending, firing, acknowledged, "
                            "unacknowledged, ack_expired, resolved, flapping, silenced, ...")
    value: float | None = None
    condition: str = Field("", description="The rule's condition in words")
    summary: str = ""
    started_at: UtcDatetime | None = Field(None, description="When the alert began firing")
    acked_by: str | None = None
    ack_comment: str | None = None
    ack_expires_at: UtcDatetime | None = None
    silenced_by: list[str] = Field(default_factory=list)
    flapping: bool = False
    notify: bool = Field(False, description="Whether receivers are to be told (not silenced, "
                         "not a repeat while flapping)")
    actor: str | None = Field(None, description="Who caused it (ack, unack); None = the rule")
    reason: str | None = Field(None, description="The actor's comment")

    @property
    def labels(self) -> dict[str, str]:
        return alert_labels(self.rule_id, self.severity, self.server_id, self.hostname,
                            self.tenant, self.item)


def alert_labels(rule_id: str, severity: str, server_id: str, hostname: str, tenant: str,
                 item: str | None) -> dict[str, str]:
    """Labels matched by silences (and sent to receivers)."""
    return {"rule_id": rule_id, "severity": str(severity), "server_id": server_id,
            "hostname": hostname, "tenant": tenant, "item": item or ""}


class AlertAction(Envelope):
    """An operator's request about one alert (``fd.alert-actions``, key = server id);
    the stream worker that owns the alert's state applies it."""

    kind: Literal["alert_action"] = "alert_action"
    action: Literal["ack", "unack"]
    alert_id: str = Field(max_length=64)
    actor: str = Field(min_length=1, max_length=120)
    comment: str = Field(min_length=1, max_length=1000)
    expires_s: Duration | None = Field(None, description="ack only: re-notify if still firing "
                                       "after this long")
