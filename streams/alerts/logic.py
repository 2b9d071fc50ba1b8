"""Alert evaluation: plain, synchronous, tested without any server.

One *alert* per (rule, server, item). Its lifecycle::

    (none) ─breach─► pending ─held for `for`─► firing ◄──unack── acknowledged
       ▲                │                        │  └──ack──────────►│
       └───────────── resolved ◄──── clear (hysteresis) ◄────────────┘

Every change is an :class:`~schemas.alerts.AlertEvent` with the alert's next sequence
number. The engine keeps every alert's record (resolved ones too, so sequence numbers
never repeat) in :attr:`AlertEngine.alerts`; the stream worker mirrors the records of the
servers in :attr:`AlertEngine.dirty` into a Faust table after each batch and loads them
back with :meth:`AlertEngine.load` after a restart.

Notifications: ``firing``, ``resolved``, ``ack_expired`` (re-notify), ``flapping`` and
``flapping_ended`` notify; acknowledgements, pending and silence changes only show in the
panel and history. Silenced alerts and repeats while flapping never notify.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from schemas import CHANNELS, MetricSample
from schemas.alerts import (
    ACTIVE_STATES,
    AlertAction,
    AlertEvent,
    AlertRule,
    AlertState,
    Silence,
    alert_id,
    alert_labels,
    matches_all,
)

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_FIRING_NOTICES = {"firing", "ack_expired", "unsilenced"}
_RESOLVED_NOTICES = {"resolved", "rule_removed", "rule_changed", "item_gone"}


def _limits(rule: AlertRule) -> tuple[Callable[[float, float], bool], float, float]:
    """(compare, threshold, clear value) of a threshold or process_down rule."""
    if rule.kind == "process_down":
        return operator.lt, 1.0, 1.0  # down = proc.up < 1
    assert rule.threshold is not None and rule.clear_at is not None
    return _COMPARE[rule.op], rule.threshold, rule.clear_at


class AlertPolicy(BaseModel):
    flap_window_s: float = Field(600.0, gt=0, description="Window in which state flips count")
    flap_threshold: int = Field(6, ge=2, description="Flips (firing <-> resolved) within the "
                                "window that mark an alert flapping")
    max_gap_s: float = Field(15.0, gt=0, description="A pending alert whose server sent "
                             "nothing for longer starts its `for` duration again")


@dataclass
class AlertRecord:
    """What the engine remembers about one alert (JSON-serialisable via :meth:`dump`)."""

    alert_id: str
    rule_id: str
    server_id: str
    tenant: str
    hostname: str
    item: str | None
    state: AlertState = AlertState.RESOLVED
    seq: int = 0
    pending_since: float | None = None  # Unix time of the first breaching sample
    started_at: float | None = None  # Unix time it began firing
    value: float | None = None
    acked_by: str | None = None
    ack_comment: str | None = None
    ack_expires_at: float | None = None
    silenced_by: list[str] = field(default_factory=list)
    flips: list[float] = field(default_factory=list)  # times of firing <-> resolved flips
    flapping: bool = False
    notified: str | None = None  # what receivers were last told: "firing" or "resolved"

    def dump(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> AlertRecord:
        known = {f for f in cls.__dataclass_fields__}  # fields of older or newer versions
        fields = {k: v for k, v in data.items() if k in known}
        fields["state"] = AlertState(fields["state"])
        return cls(**fields)


def _ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class AlertEngine:
    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        self.rules: dict[str, AlertRule] = {}
        self.silences: list[Silence] = []
        #: server id -> alert id -> record
        self.alerts: dict[str, dict[str, AlertRecord]] = {}
        #: servers whose records changed since the caller last saved them
        self.dirty: set[str] = set()
        self._last_ts: dict[str, float] = {}  # newest sample evaluated per server
        self._proc_seen: dict[str, dict[str, float]] = {}  # server -> process -> last seen
        self._ids: dict[tuple[str, str, str | None], str] = {}  # alert id cache

    # state kept outside ---------------------------------------------------------------
    def load(self, server_id: str, state: Mapping[str, Any]) -> None:
        """Restore a server's records (from the worker's table after a restart)."""
        self.alerts[server_id] = {r["alert_id"]: AlertRecord.load(r)
                                  for r in state.get("records", ())}
        if state.get("last_ts") is not None:  # samples up to here are evaluated already
            self._last_ts[server_id] = float(state["last_ts"])

    def adopt(self, event: AlertEvent) -> bool:
        """Take an alert back from its newest stored event (the SQL store), when the table
        lost it: a broker that restarted empty loses the changelog, the database does not.
        False when the engine knows the alert already."""
        records = self.alerts.setdefault(event.server_id, {})
        if event.alert_id in records:
            return False
        ts = event.ts.timestamp()
        records[event.alert_id] = AlertRecord(
            event.alert_id, event.rule_id, event.server_id, event.tenant, event.hostname,
            event.item, state=event.state, seq=event.seq,
            pending_since=ts if event.state is AlertState.PENDING else None,
            started_at=None if event.started_at is None else event.started_at.timestamp(),
            value=event.value, acked_by=event.acked_by, ack_comment=event.ack_comment,
            ack_expires_at=(None if event.ack_expires_at is None
                            else event.ack_expires_at.timestamp()),
            silenced_by=list(event.silenced_by), flapping=event.flapping,
            notified=("firing" if event.state in ACTIVE_STATES and not event.silenced_by
                      else None))
        self._ids[(event.rule_id, event.server_id, event.item)] = event.alert_id
        self.dirty.add(event.server_id)
        return True

    def dump(self, server_id: str) -> dict[str, Any]:
        return {"last_ts": self._last_ts.get(server_id),
                "records": [r.dump() for r in self.alerts.get(server_id, {}).values()]}

    def active(self) -> list[AlertRecord]:
        return [r for recs in self.alerts.values() for r in recs.values()
                if r.state is not AlertState.RESOLVED]

    # configuration --------------------------------------------------------------------
    def set_rules(self, rules: Iterable[AlertRule], now: float) -> list[AlertEvent]:
        """Replace the rules; alerts of removed or disabled rules resolve."""
        old, self.rules = self.rules, {r.id: r for r in rules if r.enabled}
        events = []
        for record in self.active():
            rule = self.rules.get(record.rule_id)
            if rule is None:
                events.append(self._resolve(record, old.get(record.rule_id), now,
                                            "rule_removed"))
            elif (before := old.get(record.rule_id)) is not None and before != rule:
                # name, severity, summary or condition changed: the panel shows the new
                # ones now (a narrowed scope resolves on the server's next sample)
                events.append(self._event(record, rule, record.state, now, "rule_updated"))
        return events

    def set_silences(self, silences: Iterable[Silence], now: float) -> list[AlertEvent]:
        self.silences = list(silences)
        return self.sweep_silences(now)

    def sweep_silences(self, now: float) -> list[AlertEvent]:
        """Alerts whose silences started or ended get an event (the panel shows it)."""
        events = []
        for record in self.active():
            rule = self.rules.get(record.rule_id)
            if rule is None:
                continue
            silenced = self._silenced_by(record, rule, now)
            if silenced != record.silenced_by:
                record.silenced_by = silenced
                events.append(self._event(record, rule, record.state, now,
                                          "silenced" if silenced else "unsilenced"))
        return events

    # evaluation -----------------------------------------------------------------------
    def observe(self, sample: MetricSample) -> list[AlertEvent]:
        """Evaluate every rule that applies to ``sample``'s server."""
        now = sample.ts.timestamp()
        server = sample.server_id
        previous = self._last_ts.get(server, float("-inf"))
        if now <= previous:
            return []  # replayed or duplicate: evaluated already
        self._last_ts[server] = now
        seen = self._proc_seen.setdefault(server, {})
        for proc in sample.processes:
            seen[proc.name] = now
        known = self.alerts.get(server, {})
        if now - previous > self.policy.max_gap_s:  # a pending `for` needs unbroken samples
            for record in known.values():
                if record.state is AlertState.PENDING:
                    record.pending_since = now
        labels = {"server_id": server, "hostname": sample.hostname, "tenant": sample.tenant}
        events: list[AlertEvent] = []
        evaluated: set[str] = set()
        for rule in self.rules.values():
            if rule.kind == "nodata" or not matches_all(rule.match, labels):
                if rule.kind == "nodata" and matches_all(rule.match, labels):
                    events.extend(self._recover_nodata(rule, sample, now))
                continue
            for item, value in self._values(rule, sample):
                key = self._alert_id(rule.id, server, item)
                evaluated.add(key)
                found = known.get(key)
                if found is None:  # records are made on a first breach only
                    compare, threshold, _clear = _limits(rule)
                    if not compare(value, threshold):
                        continue
                    found = self._record(rule, server, sample.tenant, sample.hostname, item)
                    known = self.alerts[server]
                event = self._step(found, rule, value, now)
                if event is not None:
                    events.append(event)
        for record in list(known.values()):  # items gone, or the rule no longer applies
            if record.state is AlertState.RESOLVED or record.alert_id in evaluated:
                continue
            owner = self.rules.get(record.rule_id)
            if owner is None or owner.kind == "nodata":
                continue
            gone = "item_gone" if matches_all(owner.match, labels) else "rule_changed"
            if record.state is AlertState.PENDING:
                record.pending_since = None
                events.append(self._transition(record, owner, AlertState.RESOLVED, now,
                                               "pending_cleared"))
            else:
                events.append(self._resolve(record, owner, now, gone))
        return events

    def _values(self, rule: AlertRule, sample: MetricSample) -> list[tuple[str | None, float]]:
        if rule.kind == "process_down":
            return [(i, v) for i, v in CHANNELS["proc.up"].extract(sample)
                    if rule.process in ("*", i)]
        assert rule.channel is not None
        channel = CHANNELS[rule.channel]
        values: list[tuple[str | None, float]] = list(channel.extract(sample))
        if rule.item is None:
            totals: list[tuple[str | None, float]] = [(i, v) for i, v in values if i is None]
            return totals if totals else values
        if rule.item == "*":
            return [(i, v) for i, v in values if i is not None]
        return [(i, v) for i, v in values if i == rule.item]

    def _step(self, record: AlertRecord, rule: AlertRule, value: float,
              now: float) -> AlertEvent | None:
        compare, threshold, clear_at = _limits(rule)
        record.value = value
        if record.state in ACTIVE_STATES:  # hysteresis: firing until past the clear value
            return None if compare(value, clear_at) else self._resolve(record, rule, now,
                                                                       "resolved")
        breach = compare(value, threshold)
        if record.state is AlertState.PENDING:
            if not breach:
                record.pending_since = None
                return self._transition(record, rule, AlertState.RESOLVED, now,
                                        "pending_cleared")
            if now - (record.pending_since or now) >= rule.for_s:
                return self._fire(record, rule, now)
            return None
        if not breach:
            return None
        record.pending_since = now
        if rule.for_s <= 0:
            return self._fire(record, rule, now)
        return self._transition(record, rule, AlertState.PENDING, now, "pending")

    def _recover_nodata(self, rule: AlertRule, sample: MetricSample,
                        now: float) -> list[AlertEvent]:
        """A sample arrived: a server-silence alert resolves; a process-silence alert
        resolves when that process is reported again."""
        events = []
        for record in list(self.alerts.get(sample.server_id, {}).values()):
            if record.rule_id != rule.id or record.state not in ACTIVE_STATES:
                continue
            if rule.process and (sample.server_id, record.item or "") not in {
                    (sample.server_id, p.name) for p in sample.processes}:
                continue
            events.append(self._resolve(record, rule, now, "resolved"))
        return events

    def sweep(self, now: float, last_seen: Mapping[str, tuple[float, str, str]]
              ) -> list[AlertEvent]:
        """Once a second: no-data rules, expired acknowledgements, silences that began
        or ended, flapping that calmed down. ``last_seen``: server id -> (Unix time of
        its newest sample, tenant, hostname)."""
        events: list[AlertEvent] = []
        for rule in self.rules.values():
            if rule.kind != "nodata":
                continue
            for server, (seen, tenant, hostname) in last_seen.items():
                labels = {"server_id": server, "hostname": hostname, "tenant": tenant}
                if not matches_all(rule.match, labels):
                    continue
                if rule.process:
                    events.extend(self._sweep_process(rule, server, tenant, hostname, now))
                elif now - seen > rule.silent_s:
                    record = self._record(rule, server, tenant, hostname, None)
                    if record.state not in ACTIVE_STATES:
                        record.value = round(now - seen, 1)
                        events.append(self._fire(record, rule, now))
        for record in self.active():
            acked_rule = self.rules.get(record.rule_id)
            if acked_rule is None:
                continue
            if (record.state is AlertState.ACKNOWLEDGED and record.ack_expires_at is not None
                    and now >= record.ack_expires_at):
                record.acked_by = record.ack_comment = None
                record.ack_expires_at = None
                events.append(self._transition(record, acked_rule, AlertState.FIRING, now,
                                               "ack_expired"))
        for records in self.alerts.values():
            for record in records.values():
                flap_rule = self.rules.get(record.rule_id)
                if record.flapping and flap_rule is not None:
                    self._forget_old_flips(record, now)
                    if len(record.flips) < self.policy.flap_threshold // 2:
                        record.flapping = False
                        events.append(self._event(record, flap_rule, record.state, now,
                                                  "flapping_ended"))
        events.extend(self.sweep_silences(now))
        return events

    def _sweep_process(self, rule: AlertRule, server: str, tenant: str, hostname: str,
                       now: float) -> list[AlertEvent]:
        events = []
        for name, seen in self._proc_seen.get(server, {}).items():
            if rule.process not in ("*", name):
                continue
            if now - seen > rule.silent_s:
                record = self._record(rule, server, tenant, hostname, name)
                if record.state not in ACTIVE_STATES:
                    record.value = round(now - seen, 1)
                    events.append(self._fire(record, rule, now))
        return events

    # operator actions -----------------------------------------------------------------
    def act(self, action: AlertAction, now: float) -> tuple[list[AlertEvent], str | None]:
        """Apply an ack or unack; returns the events and, when refused, why."""
        record = self.alerts.get(action.server_id, {}).get(action.alert_id)
        if record is None:
            return [], f"no alert {action.alert_id} on {action.server_id}"
        rule = self.rules.get(record.rule_id)
        if rule is None:
            return [], f"the rule {record.rule_id} of this alert no longer exists"
        if action.action == "ack":
            if record.state not in ACTIVE_STATES:
                return [], f"only a firing alert can be acknowledged (it is {record.state})"
            record.acked_by, record.ack_comment = action.actor, action.comment
            record.ack_expires_at = None if action.expires_s is None else now + action.expires_s
            event = self._transition(record, rule, AlertState.ACKNOWLEDGED, now, "acknowledged",
                                     actor=action.actor, reason=action.comment)
            return [event], None
        if record.state is not AlertState.ACKNOWLEDGED:
            return [], f"only an acknowledged alert can be unacknowledged (it is {record.state})"
        record.acked_by = record.ack_comment = None
        record.ack_expires_at = None
        event = self._transition(record, rule, AlertState.FIRING, now, "unacknowledged",
                                 actor=action.actor, reason=action.comment)
        return [event], None

    # helpers --------------------------------------------------------------------------
    def _alert_id(self, rule_id: str, server: str, item: str | None) -> str:
        key = (rule_id, server, item)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = alert_id(rule_id, server, item)
        return found

    def _record(self, rule: AlertRule, server: str, tenant: str, hostname: str,
                item: str | None) -> AlertRecord:
        key = self._alert_id(rule.id, server, item)
        records = self.alerts.setdefault(server, {})
        record = records.get(key)
        if record is None:
            record = records[key] = AlertRecord(key, rule.id, server, tenant, hostname, item)
        else:
            record.hostname, record.tenant = hostname or record.hostname, tenant
        return record

    def _fire(self, record: AlertRecord, rule: AlertRule, now: float) -> AlertEvent:
        record.started_at = now
        record.pending_since = None
        transition = "flapping" if self._flip(record, now) else "firing"
        return self._transition(record, rule, AlertState.FIRING, now, transition)

    def _resolve(self, record: AlertRecord, rule: AlertRule | None, now: float,
                 transition: str) -> AlertEvent:
        rule = rule or self._removed_rule(record)
        record.pending_since = None
        record.acked_by = record.ack_comment = None
        record.ack_expires_at = None
        if record.state in ACTIVE_STATES and self._flip(record, now):
            transition = "flapping"
        return self._transition(record, rule, AlertState.RESOLVED, now, transition)

    def _flip(self, record: AlertRecord, now: float) -> bool:
        """Count a firing <-> resolved flip; True when it makes the alert flapping."""
        record.flips.append(now)
        self._forget_old_flips(record, now)
        if not record.flapping and len(record.flips) >= self.policy.flap_threshold:
            record.flapping = True
            return True
        return False

    def _forget_old_flips(self, record: AlertRecord, now: float) -> None:
        horizon = now - self.policy.flap_window_s
        record.flips = [t for t in record.flips if t > horizon][-64:]

    def _silenced_by(self, record: AlertRecord, rule: AlertRule, now: float) -> list[str]:
        labels = alert_labels(rule.id, rule.severity, record.server_id, record.hostname,
                              record.tenant, record.item)
        at = datetime.fromtimestamp(now, UTC)
        return sorted(s.id for s in self.silences
                      if s.active(at) and matches_all(s.matchers, labels))

    def _removed_rule(self, record: AlertRecord) -> AlertRule:
        """Stand-in for a rule deleted while the worker was down (its alerts resolve)."""
        return AlertRule(id=record.rule_id, kind="nodata", silent_s=1,
                         summary="rule removed")

    def _transition(self, record: AlertRecord, rule: AlertRule, state: AlertState,
                    now: float, transition: str, *, actor: str | None = None,
                    reason: str | None = None) -> AlertEvent:
        previous = record.state
        record.state = state
        if state is AlertState.RESOLVED:
            record.started_at = None if transition == "pending_cleared" else record.started_at
        return self._event(record, rule, previous, now, transition, actor=actor, reason=reason)

    def _notify(self, record: AlertRecord, transition: str) -> bool:
        """Whether receivers hear of this event (and remember what they were told)."""
        if transition in ("flapping", "flapping_ended"):
            notify = not record.silenced_by
        elif record.flapping:
            notify = False  # told once that it flaps; quiet until it calms
        elif record.state is AlertState.FIRING and transition in _FIRING_NOTICES:
            notify = not record.silenced_by
        elif record.state is AlertState.RESOLVED and transition in _RESOLVED_NOTICES:
            notify = record.notified == "firing"  # even when silenced since: close it
        else:
            notify = False
        if notify:
            record.notified = ("resolved" if record.state is AlertState.RESOLVED
                               else "firing")
        return notify

    def _event(self, record: AlertRecord, rule: AlertRule, previous: AlertState, now: float,
               transition: str, *, actor: str | None = None,
               reason: str | None = None) -> AlertEvent:
        # Sequence numbers only grow, even if a record is lost and made again: the next is
        # the previous + 1 or the worker's clock in milliseconds, whichever is larger.
        record.seq = max(record.seq + 1, int(time.time() * 1000))
        record.silenced_by = self._silenced_by(record, rule, now)
        self.dirty.add(record.server_id)
        notify = self._notify(record, transition)
        return AlertEvent(
            ts=datetime.fromtimestamp(now, UTC), tenant=record.tenant,
            server_id=record.server_id, alert_id=record.alert_id, seq=record.seq,
            rule_id=rule.id, rule_name=rule.title, severity=rule.severity, item=record.item,
            hostname=record.hostname, state=record.state, previous=previous,
            transition=transition, value=record.value, condition=rule.describe(),
            summary=rule.summary, started_at=_ts(record.started_at),
            acked_by=record.acked_by, ack_comment=record.ack_comment,
            ack_expires_at=_ts(record.ack_expires_at), silenced_by=record.silenced_by,
            flapping=record.flapping, notify=notify, actor=actor, reason=reason)

