"""The Alertmanager-shaped webhook payload, the retry backoff and the settings checks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from connectors.webhook import (
    ZERO_TIME,
    WebhookSettings,
    alertmanager_payload,
    backoff_s,
)
from schemas.alerts import AlertEvent, AlertState, Severity, alert_id

EXTERNAL = "https://fleetdeck.example:8000"
STARTED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW = STARTED + timedelta(minutes=5)

TOP_KEYS = {"receiver": str, "status": str, "alerts": list, "groupLabels": dict,
            "commonLabels": dict, "commonAnnotations": dict, "externalURL": str,
            "version": str, "groupKey": str, "truncatedAlerts": int}
ALERT_KEYS = {"status": str, "labels": dict, "annotations": dict, "startsAt": str,
              "endsAt": str, "generatorURL": str, "fingerprint": str}


def event(state: AlertState = AlertState.FIRING, **kw: Any) -> AlertEvent:
    fields: dict[str, Any] = {
        "alert_id": alert_id("cpu-high", "srv-1", None), "seq": 3, "rule_id": "cpu-high",
        "rule_name": "CPU high", "severity": Severity.CRITICAL, "hostname": "srv-1.example",
        "server_id": "srv-1", "tenant": "acme", "state": state, "transition": str(state),
        "value": 97.5, "condition": "cpu.total > 90 for 120s", "ts": NOW,
        "started_at": STARTED}
    fields.update(kw)
    return AlertEvent(**fields)


def assert_alertmanager_shape(payload: dict[str, Any]) -> dict[str, Any]:
    """Every key of Alertmanager's webhook message, typed as Alertmanager types it."""
    for key, kind in TOP_KEYS.items():
        assert isinstance(payload[key], kind), key
    assert payload["version"] == "4"
    assert payload["truncatedAlerts"] == 0
    assert len(payload["alerts"]) == 1
    alert = payload["alerts"][0]
    for key, kind in ALERT_KEYS.items():
        assert isinstance(alert[key], kind), key
    for mapping in (alert["labels"], alert["annotations"], payload["groupLabels"],
                    payload["commonLabels"], payload["commonAnnotations"]):
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
    assert alert["status"] == payload["status"]
    for stamp in (alert["startsAt"], alert["endsAt"]):
        assert stamp.endswith("Z")
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # RFC 3339
    return alert  # type: ignore[no-any-return]


def test_firing_payload() -> None:
    ev = event()
    payload = alertmanager_payload(ev, "ops", EXTERNAL)
    alert = assert_alertmanager_shape(payload)
    assert payload["status"] == "firing"
    assert payload["receiver"] == "ops"
    assert payload["externalURL"] == EXTERNAL
    assert alert["labels"] == {"alertname": "CPU high", "rule_id": "cpu-high",
                               "severity": "critical", "server_id": "srv-1",
                               "hostname": "srv-1.example", "tenant": "acme"}
    assert alert["startsAt"] == "2024-05-01T12:00:00.000000Z"
    assert alert["endsAt"] == ZERO_TIME == "0001-01-01T00:00:00Z"
    assert alert["fingerprint"] == ev.alert_id
    assert alert["generatorURL"] == f"{EXTERNAL}/alerts?alert={ev.alert_id}"
    notes = alert["annotations"]
    assert notes["summary"] == "cpu.total > 90 for 120s"
    assert notes["description"] == "cpu.total > 90 for 120s (value 97.5)"
    assert notes["fleetdeck_state"] == "firing"
    assert notes["fleetdeck_transition"] == "firing"
    assert not {"acked_by", "ack_comment", "flapping"} & notes.keys()
    assert payload["groupLabels"] == {"alertname": "CPU high"}
    assert payload["commonLabels"] == alert["labels"]
    assert payload["commonAnnotations"] == notes
    assert payload["fleetdeck"] == {"alert_id": ev.alert_id, "seq": 3,
                                    "idempotency_key": f"{ev.alert_id}:3"}


def test_acknowledged_payload_is_still_firing() -> None:
    ev = event(AlertState.ACKNOWLEDGED, transition="acknowledged", acked_by="alice",
               ack_comment="looking into it", summary="CPU pegged on srv-1")
    alert = assert_alertmanager_shape(alertmanager_payload(ev, "ops", EXTERNAL))
    assert alert["status"] == "firing"
    assert alert["endsAt"] == ZERO_TIME
    notes = alert["annotations"]
    assert notes["summary"] == "CPU pegged on srv-1"
    assert notes["fleetdeck_state"] == "acknowledged"
    assert notes["fleetdeck_transition"] == "acknowledged"
    assert notes["acked_by"] == "alice"
    assert notes["ack_comment"] == "looking into it"


def test_resolved_payload_ends_at_the_event() -> None:
    ev = event(AlertState.RESOLVED, previous=AlertState.FIRING, seq=4, value=40.0)
    payload = alertmanager_payload(ev, "ops", EXTERNAL)
    alert = assert_alertmanager_shape(payload)
    assert payload["status"] == alert["status"] == "resolved"
    assert alert["startsAt"] == "2024-05-01T12:00:00.000000Z"
    assert alert["endsAt"] == "2024-05-01T12:05:00.000000Z"
    assert alert["annotations"]["fleetdeck_state"] == "resolved"
    assert payload["fleetdeck"]["idempotency_key"] == f"{ev.alert_id}:4"


def test_flapping_payload() -> None:
    alert = assert_alertmanager_shape(alertmanager_payload(
        event(transition="flapping", flapping=True), "ops", EXTERNAL))
    assert alert["annotations"]["flapping"] == "true"
    assert alert["annotations"]["fleetdeck_transition"] == "flapping"


def test_item_label_and_rule_id_fallback() -> None:
    ev = event(rule_name="", item="/var", alert_id=alert_id("cpu-high", "srv-1", "/var"),
               started_at=None, ts=datetime(2024, 5, 1, 16, 0, tzinfo=ZoneInfo("Europe/Paris")))
    alert = assert_alertmanager_shape(alertmanager_payload(ev, "ops", EXTERNAL + "/"))
    assert alert["labels"]["alertname"] == "cpu-high"
    assert alert["labels"]["item"] == "/var"
    assert alert["startsAt"] == "2024-05-01T14:00:00.000000Z"  # event time, in UTC
    assert alert["generatorURL"].startswith(f"{EXTERNAL}/alerts?")


def test_description_without_value() -> None:
    alert = alertmanager_payload(event(value=None), "ops", EXTERNAL)["alerts"][0]
    assert alert["annotations"]["description"] == "cpu.total > 90 for 120s"


def test_group_key_is_deterministic_per_receiver_and_alert() -> None:
    first = alertmanager_payload(event(), "ops", EXTERNAL)["groupKey"]
    assert alertmanager_payload(event(seq=9, value=1.0), "ops", EXTERNAL)["groupKey"] == first
    assert alertmanager_payload(event(), "pager", EXTERNAL)["groupKey"] != first
    other = event(alert_id=alert_id("cpu-high", "srv-2", None), server_id="srv-2")
    assert alertmanager_payload(other, "ops", EXTERNAL)["groupKey"] != first


def settings(**kw: Any) -> WebhookSettings:
    return WebhookSettings(backoff_initial_s=1.0, backoff_max_s=60.0, **kw)


def test_backoff_grows_exponentially() -> None:
    no_jitter = random.Random(0)
    no_jitter.uniform = lambda a, b: 0.0  # type: ignore[method-assign]
    assert [backoff_s(n, settings(), no_jitter) for n in range(1, 6)] == [1, 2, 4, 8, 16]


def test_backoff_caps_at_max() -> None:
    rng = random.Random(1)
    for attempt in (7, 8, 20, 1000, 10**6):
        assert 0.8 * 60.0 <= backoff_s(attempt, settings(), rng) <= 60.0


def test_backoff_jitter_is_bounded_and_varies() -> None:
    rng = random.Random(2)
    delays = [backoff_s(3, settings(), rng) for _ in range(500)]
    assert all(3.2 <= d <= 4.8 for d in delays)
    assert max(delays) - min(delays) > 1.0  # actually jittered, not constant
    assert backoff_s(3, settings(), random.Random(7)) == backoff_s(3, settings(),
                                                                   random.Random(7))


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        backoff_s(0, settings())


@pytest.mark.parametrize("url", ["ftp://hooks.example/x", "file:///etc/passwd",
                                 "hooks.example/x", "http://", "javascript:alert(1)"])
def test_settings_reject_non_http_urls(url: str) -> None:
    with pytest.raises(ValidationError, match=r"urls\[1\]: .* must use http:// or https://"):
        WebhookSettings(urls=["https://ok.example/hook", url])


def test_settings_accept_http_and_https() -> None:
    urls = ["http://127.0.0.1:9000/hook", "https://hooks.example/a?b=c"]
    assert WebhookSettings(urls=urls).urls == urls


def test_settings_reject_bad_numbers() -> None:
    with pytest.raises(ValidationError, match="backoff_max_s"):
        WebhookSettings(backoff_initial_s=10, backoff_max_s=1)
    with pytest.raises(ValidationError, match="max_attempts"):
        WebhookSettings(max_attempts=0)
    with pytest.raises(ValidationError, match="external_url"):
        WebhookSettings(external_url="ftp://ui.example")
