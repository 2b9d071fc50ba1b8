"""The alert state machine: for, hysteresis, items, no-data, acks, silences, flapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from schemas import AlertAction, AlertRule, AlertState, ProcessHealth, Silence
from schemas.alerts import Matcher, parse_duration
from streams.alerts.logic import AlertEngine, AlertPolicy
from tests.factories import sample

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def engine(*rules: AlertRule, policy: AlertPolicy | None = None) -> AlertEngine:
    e = AlertEngine(policy or AlertPolicy(max_gap_s=600))  # tests jump ahead in time
    e.set_rules(rules, T0.timestamp())
    return e


CPU = AlertRule.model_validate({"id": "cpu-high", "expr": "cpu.total > 90 for 2m",
                                "clear": 80, "severity": "critical"})


def states(events: list) -> list[tuple[str, str]]:
    return [(e.transition, e.state.value) for e in events]


def test_threshold_waits_for_its_duration_then_fires_once() -> None:
    e = engine(CPU)
    assert states(e.observe(sample(cpu=95, ts=at(0)))) == [("pending", "pending")]
    assert e.observe(sample(cpu=96, ts=at(60))) == []
    fired = e.observe(sample(cpu=97, ts=at(120)))
    assert states(fired) == [("firing", "firing")]
    assert fired[0].notify and fired[0].value == 97 and fired[0].started_at == at(120)
    assert fired[0].condition == "cpu.total > 90 for 120s"
    assert e.observe(sample(cpu=99, ts=at(121))) == []  # no repeat while firing


def test_pending_that_clears_before_its_duration_never_fires_or_notifies() -> None:
    e = engine(CPU)
    e.observe(sample(cpu=95, ts=at(0)))
    cleared = e.observe(sample(cpu=50, ts=at(30)))
    assert states(cleared) == [("pending_cleared", "resolved")]
    assert not cleared[0].notify
    assert states(e.observe(sample(cpu=95, ts=at(40)))) == [("pending", "pending")]
    assert e.observe(sample(cpu=95, ts=at(100))) == []  # the 2 minutes start again at 40


def test_hysteresis_keeps_firing_until_past_the_clear_value() -> None:
    e = engine(CPU)
    e.observe(sample(cpu=95, ts=at(0)))
    e.observe(sample(cpu=95, ts=at(120)))
    assert e.observe(sample(cpu=85, ts=at(121))) == []  # below 90 but above 80
    resolved = e.observe(sample(cpu=79, ts=at(122)))
    assert states(resolved) == [("resolved", "resolved")]
    assert resolved[0].notify and resolved[0].previous is AlertState.FIRING


def test_sequence_numbers_grow_per_alert_and_never_repeat() -> None:
    e = engine(AlertRule(id="r", channel="cpu.total", threshold=50))
    seqs = []
    for i, cpu in enumerate([60, 10, 60, 10]):
        seqs += [ev.seq for ev in e.observe(sample(cpu=cpu, ts=at(i)))]
    assert len(seqs) == 4 and seqs == sorted(set(seqs))


def test_per_item_rule_fires_per_mount_and_ids_differ() -> None:
    rule = AlertRule(id="fs", channel="fs.used_pct", threshold=90)  # no total: every item
    e = engine(rule)
    events = e.observe(sample(fs_pct=95, ts=at(0)))
    assert [(ev.item, ev.state.value) for ev in events] == [("/data", "firing")]
    other = e.observe(sample("srv-2", fs_pct=95, ts=at(0)))
    assert other[0].alert_id != events[0].alert_id


def test_rule_scoped_by_matchers_ignores_other_servers() -> None:
    rule = AlertRule(id="r", channel="cpu.total", threshold=50,
                     match=[Matcher(label="server_id", op="=~", value="web-.*")])
    e = engine(rule)
    assert e.observe(sample("db-1", cpu=99, ts=at(0))) == []
    assert states(e.observe(sample("web-1", cpu=99, ts=at(0)))) == [("firing", "firing")]


def test_process_down_fires_for_the_named_process() -> None:
    rule = AlertRule(id="nginx-down", kind="process_down", process="nginx", for_s=0)
    e = engine(rule)
    down = ProcessHealth(name="nginx", up=False, instances=0)
    up = ProcessHealth(name="nginx", up=True, instances=2)
    fired = e.observe(sample(processes=[down], ts=at(0)))
    assert states(fired) == [("firing", "firing")] and fired[0].item == "nginx"
    assert states(e.observe(sample(processes=[up], ts=at(1)))) == [("resolved", "resolved")]


def test_nodata_fires_when_a_server_is_silent_and_resolves_on_the_next_sample() -> None:
    rule = AlertRule(id="silent", kind="nodata", silent_s=30)
    e = engine(rule)
    e.observe(sample(ts=at(0)))
    last_seen = {"srv-1": (at(0).timestamp(), "default", "srv-1.example")}
    assert e.sweep(at(20).timestamp(), last_seen) == []
    fired = e.sweep(at(31).timestamp(), last_seen)
    assert states(fired) == [("firing", "firing")]
    assert e.sweep(at(40).timestamp(), last_seen) == []  # fires once
    assert states(e.observe(sample(ts=at(41)))) == [("resolved", "resolved")]


def test_nodata_for_a_watched_process_that_stops_being_reported() -> None:
    rule = AlertRule(id="cron-silent", kind="nodata", silent_s=10, process="cron")
    e = engine(rule)
    e.observe(sample(ts=at(0), processes=[ProcessHealth(name="cron", up=True, instances=1)]))
    e.observe(sample(ts=at(15)))  # the server reports, the process is missing
    last_seen = {"srv-1": (at(15).timestamp(), "default", "srv-1.example")}
    fired = e.sweep(at(15).timestamp(), last_seen)
    assert states(fired) == [("firing", "firing")] and fired[0].item == "cron"


def test_a_gap_in_samples_restarts_a_pending_duration() -> None:
    e = engine(CPU, policy=AlertPolicy(max_gap_s=15))
    e.observe(sample(cpu=95, ts=at(0)))
    assert e.observe(sample(cpu=95, ts=at(600))) == []  # silent for 10 min: not "held"
    assert states(e.observe(sample(cpu=95, ts=at(720)))) == []  # another gap: starts again
    for t in range(725, 850, 5):
        fired = e.observe(sample(cpu=95, ts=at(t)))
        if fired:
            break
    assert states(fired) == [("firing", "firing")] and fired[0].ts == at(840)  # 120 s after 720


def test_an_item_that_disappears_resolves_its_alert() -> None:
    e = engine(AlertRule(id="fs", channel="fs.used_pct", threshold=90))
    assert states(e.observe(sample(fs_pct=95, ts=at(0)))) == [("firing", "firing")]
    gone = e.observe(sample(ts=at(1)))  # the mount is no longer reported
    assert states(gone) == [("item_gone", "resolved")] and gone[0].notify


def test_a_narrowed_rule_resolves_alerts_it_no_longer_covers() -> None:
    rule = AlertRule(id="r", channel="cpu.total", threshold=50)
    e = engine(rule)
    e.observe(sample(cpu=99, ts=at(0)))
    narrowed = rule.model_copy(update={"match": [Matcher(label="server_id", value="other")]})
    e.set_rules([narrowed], at(1).timestamp())
    changed = e.observe(sample(cpu=99, ts=at(2)))
    assert states(changed) == [("rule_changed", "resolved")] and changed[0].notify


def test_receivers_hear_the_resolve_of_what_they_were_told_fired() -> None:
    e = engine(AlertRule(id="r", channel="cpu.total", threshold=50))
    assert e.observe(sample(cpu=99, ts=at(0)))[0].notify
    silence = Silence(id="s", matchers=[Matcher(label="rule_id", value="r")], starts_at=at(1),
                      ends_at=at(100), created_by="a", comment="c", created_at=at(1))
    e.set_silences([silence], at(1).timestamp())
    resolved = e.observe(sample(cpu=1, ts=at(2)))[0]
    assert resolved.silenced_by == ["s"] and resolved.notify  # the incident must close
    refired = e.observe(sample(cpu=99, ts=at(3)))[0]
    assert not refired.notify  # silenced
    unsilenced = e.sweep(at(100).timestamp(), {})
    assert states(unsilenced) == [("unsilenced", "firing")] and unsilenced[0].notify


def test_removing_a_rule_notifies_the_resolve() -> None:
    e = engine(AlertRule(id="r", channel="cpu.total", threshold=50))
    e.observe(sample(cpu=99, ts=at(0)))
    removed = e.set_rules([], at(1).timestamp())
    assert states(removed) == [("rule_removed", "resolved")] and removed[0].notify


def test_ack_unack_and_resolve_clears_the_acknowledgement() -> None:
    e = engine(AlertRule(id="r", channel="cpu.total", threshold=50))
    fired = e.observe(sample(cpu=99, ts=at(0)))[0]
    ack = AlertAction(server_id="srv-1", action="ack", alert_id=fired.alert_id,
                      actor="ana", comment="looking")
    events, refused = e.act(ack, at(1).timestamp())
    assert refused is None
    assert states(events) == [("acknowledged", "acknowledged")]
    assert events[0].acked_by == "ana" and events[0].reason == "looking"
    assert not events[0].notify
    unack = AlertAction(server_id="srv-1", action="unack", alert_id=fired.alert_id,
                        actor="ana", comment="not mine")
    assert states(e.act(unack, at(2).timestamp())[0]) == [("unacknowledged", "firing")]
    e.act(ack, at(3).timestamp())
    resolved = e.observe(sample(cpu=10, ts=at(4)))[0]
    assert resolved.state is AlertState.RESOLVED and resolved.acked_by is None


def test_ack_is_refused_for_unknown_or_resolved_alerts() -> None:
    e = engine(AlertRule(id="r", channel="cpu.total", threshold=50))
    unknown = AlertAction(server_id="srv-1", action="ack", alert_id="nope", actor="a",
                          comment="c")
    assert e.act(unknown, 0)[1] is not None
    fired = e.observe(sample(cpu=99, ts=at(0)))[0]
    e.observe(sample(cpu=1, ts=at(1)))
    late = AlertAction(server_id="srv-1", action="ack", alert_id=fired.alert_id, actor="a",
                       comment="c")
    events, refused = e.act(late, at(2).timestamp())
    assert events == [] and refused is not None and "firing" in refused


def test_an_expired_acknowledgement_notifies_again() -> None:
    e = engine(AlertRule(id="r", channel="cpu.total", threshold=50))
    fired = e.observe(sample(cpu=99, ts=at(0)))[0]
    e.act(AlertAction(server_id="srv-1", action="ack", alert_id=fired.alert_id, actor="a",
                      comment="c", expires_s=60), at(0).timestamp())
    assert e.sweep(at(59).timestamp(), {}) == []
    expired = e.sweep(at(60).timestamp(), {})
    assert states(expired) == [("ack_expired", "firing")] and expired[0].notify


def test_silenced_alert_shows_but_does_not_notify() -> None:
    e = engine(AlertRule(id="r", channel="cpu.total", threshold=50))
    silence = Silence(id="s1", matchers=[Matcher(label="server_id", value="srv-1")],
                      starts_at=at(0), ends_at=at(100), created_by="ana", comment="upgrade",
                      created_at=at(0))
    e.set_silences([silence], at(0).timestamp())
    fired = e.observe(sample(cpu=99, ts=at(1)))[0]
    assert fired.state is AlertState.FIRING and fired.silenced_by == ["s1"]
    assert not fired.notify
    unsilenced = e.sweep(at(100).timestamp(), {})
    assert states(unsilenced) == [("unsilenced", "firing")] and unsilenced[0].silenced_by == []


def test_flapping_alert_notifies_once_then_stays_quiet_until_it_calms() -> None:
    e = engine(AlertRule(id="r", channel="cpu.total", threshold=50),
               policy=AlertPolicy(flap_window_s=60, flap_threshold=4))
    notified = []
    for i in range(10):
        for ev in e.observe(sample(cpu=99 if i % 2 == 0 else 1, ts=at(i))):
            if ev.notify:
                notified.append(ev.transition)
    assert notified == ["firing", "resolved", "firing", "flapping"]
    ended = e.sweep(at(100).timestamp(), {})
    assert [ev.transition for ev in ended] == ["flapping_ended"] and ended[0].notify


def test_removed_rule_resolves_its_alerts() -> None:
    rule = AlertRule(id="r", channel="cpu.total", threshold=50, severity="critical")
    e = engine(rule)
    e.observe(sample(cpu=99, ts=at(0)))
    events = e.set_rules([], at(1).timestamp())
    assert states(events) == [("rule_removed", "resolved")]
    assert events[0].severity == "critical"


def test_records_survive_a_dump_and_load() -> None:
    e = engine(CPU)
    e.observe(sample(cpu=95, ts=at(0)))
    fired = e.observe(sample(cpu=95, ts=at(120)))[0]
    again = engine(CPU)
    again.load("srv-1", e.dump("srv-1"))
    assert again.observe(sample(cpu=95, ts=at(121))) == []  # still firing: nothing new
    resolved = again.observe(sample(cpu=10, ts=at(122)))[0]
    assert resolved.seq > fired.seq
    assert again.observe(sample(cpu=99, ts=at(122))) == []  # evaluated before the restart


def test_replayed_older_samples_are_not_evaluated_twice() -> None:
    e = engine(AlertRule(id="r", channel="cpu.total", threshold=50))
    e.observe(sample(cpu=99, ts=at(10)))
    assert e.observe(sample(cpu=1, ts=at(5))) == []


@pytest.mark.parametrize(("data", "field"), [
    ({"id": "x", "expr": "cpu.nope > 1"}, "channel"),
    ({"id": "x", "channel": "cpu.total"}, "threshold"),
    ({"id": "x", "channel": "cpu.total", "threshold": 5, "clear": 9}, "clear"),
    ({"id": "x", "kind": "process_down"}, "process"),
    ({"id": "x", "expr": "cpu.total > 1 for soon"}, "for"),
    ({"id": "bad id!", "expr": "cpu.total > 1"}, "id"),
    ({"id": "x", "expr": "cpu.total > 1", "severity": "urgent"}, "severity"),
    ({"id": "x", "expr": "cpu.total > 1", "colour": "red"}, "colour"),
    ({"id": "x", "expr": "cpu.total > 1",
      "match": [{"label": "server_id", "op": "=~", "value": "("}]}, "regular expression"),
])
def test_invalid_rules_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        AlertRule.model_validate(data)


def test_durations() -> None:
    assert parse_duration("2m") == 120 and parse_duration(90) == 90
    assert parse_duration("1.5h") == 5400 and parse_duration("500ms") == 0.5
    with pytest.raises(ValueError, match="duration"):
        parse_duration("-1m")


def test_an_alert_taken_back_from_the_sql_store_continues_where_it_was() -> None:
    e = engine(AlertRule(id="r", channel="cpu.total", threshold=50, clear=40))
    fired = e.observe(sample(cpu=99, ts=at(0)))[0]
    acked, _ = e.act(AlertAction(server_id="srv-1", action="ack", alert_id=fired.alert_id,
                                 actor="ana", comment="on it"), at(1).timestamp())
    fresh = engine(AlertRule(id="r", channel="cpu.total", threshold=50, clear=40))
    assert fresh.adopt(acked[0]) and not fresh.adopt(acked[0])
    assert fresh.observe(sample(cpu=45, ts=at(2))) == []  # still acknowledged, no repeat
    resolved = fresh.observe(sample(cpu=10, ts=at(3)))[0]
    assert resolved.previous is AlertState.ACKNOWLEDGED and resolved.notify
    assert resolved.seq > acked[0].seq


def test_a_changed_rule_updates_its_active_alerts() -> None:
    rule = AlertRule(id="r", channel="cpu.total", threshold=50)
    e = engine(rule)
    e.observe(sample(cpu=99, ts=at(0)))
    updated = e.set_rules([rule.model_copy(update={"severity": "critical"})], at(1).timestamp())
    assert [(ev.transition, ev.severity, ev.state.value) for ev in updated] == [
        ("rule_updated", "critical", "firing")]
    assert not updated[0].notify


@pytest.mark.parametrize(("data", "field"), [
    ({"id": "x", "kind": "nodata", "expr": "cpu.total > 1"}, "expr"),
    ({"id": "x", "kind": "nodata", "channel": "cpu.total"}, "channel"),
    ({"id": "x", "expr": "cpu.total > 1", "process": "nginx"}, "process"),
    ({"id": "x", "expr": "cpu.total[x] > 1"}, "item"),
    ({"id": "x", "expr": "cpu.total > 1 for 2m", "for": "5m"}, "for_s"),
    ({"id": "x", "expr": "cpu.total > 1", "threshold": 5}, "threshold"),
    ({"id": "x", "expr": "cpu.total > 1",
      "match": [{"label": "severity", "value": "critical"}]}, "match"),
    ({"id": "x", "expr": "cpu.total > 1",
      "match": [{"label": "server_id", "op": "=~", "value": "(a)\\1"}]}, "RE2"),
])
def test_rules_with_fields_that_would_be_ignored_are_refused(data: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        AlertRule.model_validate(data)


def test_matcher_regexes_run_in_linear_time() -> None:
    slow_in_python = Matcher(label="hostname", op="=~", value=".{4}(.|.|.)*x")
    assert not slow_in_python.matches({"hostname": "sim-0001.fleet.local" * 12})
