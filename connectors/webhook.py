"""Webhook notifier: alert events POSTed as Prometheus Alertmanager webhook messages.

The body follows Alertmanager's webhook format (``version`` "4"), so receivers written for
Alertmanager (chat bridges, paging tools, ticketing) work unchanged. One message carries one
alert. Receivers ignore unknown keys, so a top-level ``fleetdeck`` object adds what
Alertmanager has no field for: the alert id, the event's sequence number and the
idempotency key (also sent as the ``Idempotency-Key`` header), which lets a receiver drop a
message delivered twice after a worker restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, Field, field_validator, model_validator

from connectors.errors import ConnectorError
from schemas.alerts import AlertEvent, AlertState

log = logging.getLogger(__name__)

#: Alertmanager's ``endsAt`` while an alert is still firing (Go's zero time).
ZERO_TIME = "0001-01-01T00:00:00Z"
ALERTMANAGER_VERSION = "4"
_JITTER = 0.2  # backoff delays vary by +-20 % so receivers are not hit in lockstep
_RETRYABLE_STATUS = frozenset({408, 429})  # besides every 5xx


class WebhookError(ConnectorError):
    """A receiver could not be reached, timed out, or answered with a non-2xx status."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status  # HTTP status, None when no answer came
        self.retryable = retryable  # sending the same message again may succeed
        self.retry_after_s = retry_after_s  # the receiver's Retry-After, in seconds


def _check_http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    return url


class WebhookSettings(BaseModel):
    urls: list[str] = Field(default_factory=list, description="Receiver URLs (http/https)")
    timeout_s: float = Field(5.0, gt=0, description="Total time allowed for one POST")
    max_attempts: int = Field(8, ge=1, description="Attempts before a notification is given up")
    backoff_initial_s: float = Field(1.0, gt=0, description="Delay before the second attempt")
    backoff_max_s: float = Field(300.0, gt=0, description="Longest delay between attempts")
    external_url: str = Field("http://127.0.0.1:8000", description="FleetDeck UI, linked from "
                              "notifications (externalURL, generatorURL)")

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for index, url in enumerate(urls):
            try:
                _check_http_url(url)
            except ValueError as exc:
                raise ValueError(f"urls[{index}]: {exc}; webhook receivers must use "
                                 "http:// or https://") from None
        return urls

    @field_validator("external_url")
    @classmethod
    def _http_external(cls, url: str) -> str:
        return _check_http_url(url).rstrip("/")

    @model_validator(mode="after")
    def _backoff_order(self) -> WebhookSettings:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s: must be at least backoff_initial_s")
        return self


def rfc3339(ts: datetime) -> str:
    """``2024-05-01T12:00:00.123456Z``: UTC, as Alertmanager writes its times."""
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _labels(event: AlertEvent) -> dict[str, str]:
    # An empty label is the same as no label in Prometheus' data model: leave those out.
    extra = {key: value for key, value in event.labels.items() if value}
    return {"alertname": event.rule_name or event.rule_id, **extra}


def _description(event: AlertEvent) -> str:
    value = "" if event.value is None else f"value {event.value:g}"
    if event.condition and value:
        return f"{event.condition} ({value})"
    return event.condition or value


def _annotations(event: AlertEvent) -> dict[str, str]:
    notes = {"summary": event.summary or event.condition or event.rule_name or event.rule_id,
             "description": _description(event),
             "fleetdeck_state": str(event.state),
             "fleetdeck_transition": event.transition}
    if event.acked_by:
        notes["acked_by"] = event.acked_by
    if event.ack_comment:
        notes["ack_comment"] = event.ack_comment
    if event.flapping:
        notes["flapping"] = "true"
    return notes


def _group_key(receiver: str, alert_id: str) -> str:
    # Alertmanager's shape (route key, then the group's labels). It names the alert, not the
    # rule: receivers thread and deduplicate by groupKey, and each message is one alert.
    return f"{{}}/{{receiver={json.dumps(receiver)}}}:{{alert_id={json.dumps(alert_id)}}}"


def alertmanager_payload(event: AlertEvent, receiver: str, external_url: str) -> dict[str, Any]:
    """The Alertmanager webhook message (version 4) announcing one alert event."""
    resolved = event.state is AlertState.RESOLVED
    status = "resolved" if resolved else "firing"
    labels, annotations = _labels(event), _annotations(event)
    base = external_url.rstrip("/")
    alert = {"status": status, "labels": labels, "annotations": annotations,
             "startsAt": rfc3339(event.started_at or event.ts),
             "endsAt": rfc3339(event.ts) if resolved else ZERO_TIME,
             "generatorURL": f"{base}/alerts?alert={event.alert_id}",
             "fingerprint": event.alert_id}
    return {"receiver": receiver, "status": status, "alerts": [alert],
            "groupLabels": {"alertname": labels["alertname"]},
            "commonLabels": dict(labels), "commonAnnotations": dict(annotations),
            "externalURL": base, "version": ALERTMANAGER_VERSION,
            "groupKey": _group_key(receiver, event.alert_id), "truncatedAlerts": 0,
            "fleetdeck": {"alert_id": event.alert_id, "seq": event.seq,
                          "idempotency_key": f"{event.alert_id}:{event.seq}"}}


def backoff_s(attempt: int, settings: WebhookSettings, rng: random.Random | None = None) -> float:
    """Delay after failed attempt number ``attempt`` (1-based): doubling from
    ``backoff_initial_s``, +-20 % jitter, never more than ``backoff_max_s``."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    steps = min(attempt - 1, 64)  # 2**64 s is past any cap; larger exponents overflow floats
    base = min(settings.backoff_initial_s * 2.0**steps, settings.backoff_max_s)
    factor = 1.0 + (rng or random).uniform(-_JITTER, _JITTER)
    return min(base * factor, settings.backoff_max_s)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (its HTTP-date form is rare from receivers: ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _idempotency_key(payload: dict[str, Any]) -> str:
    try:
        return str(payload["fleetdeck"]["idempotency_key"])
    except (KeyError, TypeError):
        raise WebhookError("payload has no fleetdeck.idempotency_key; build it with "
                           "alertmanager_payload()", retryable=False) from None


def _encode(payload: dict[str, Any]) -> bytes:
    try:
        return json.dumps(payload, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise WebhookError(f"payload is not JSON-serialisable: {exc}", retryable=False) from exc


class WebhookNotifier:
    """POSTs Alertmanager webhook messages (one pooled session, opened on first use)."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0  # messages a receiver accepted (by deliver)
        self.given_up = 0  # messages dropped after max_attempts or a non-retryable error

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, url: str, payload: dict[str, Any]) -> None:
        """POST ``payload`` once; return on a 2xx answer, raise :class:`WebhookError`
        otherwise (and on any failure to get an answer)."""
        try:
            _check_http_url(url)
        except ValueError as exc:
            raise WebhookError(str(exc), retryable=False) from None
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": _idempotency_key(payload)}
        body = _encode(payload)
        try:
            await self._post(url, body, headers)
        except WebhookError:
            raise
        except aiohttp.InvalidURL as exc:
            raise WebhookError(f"POST {url}: invalid URL: {exc}", retryable=False) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise WebhookError(f"POST {url} failed: {exc!r}", retryable=True) from exc
        except Exception as exc:  # the contract: nothing but WebhookError leaves send()
            log.exception("unexpected error posting to webhook %s", url)
            raise WebhookError(f"POST {url}: unexpected {exc!r}", retryable=False) from exc

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        # Redirects are not followed: aiohttp would turn the POST into a body-less GET.
        async with self._http().post(url, data=body, headers=headers,
                                     allow_redirects=False) as resp:
            if 200 <= resp.status < 300:
                return
            text = (await resp.text(errors="replace"))[:200]
            status = resp.status
            raise WebhookError(
                f"POST {url}: HTTP {status} {text}", status=status,
                retryable=status >= 500 or status in _RETRYABLE_STATUS,
                retry_after_s=_retry_after(resp.headers.get("Retry-After")))

    async def deliver(self, url: str, payload: dict[str, Any],
                      rng: random.Random | None = None) -> bool:
        """Send with retries (exponential backoff, honouring Retry-After up to
        ``backoff_max_s``) until accepted, refused, or ``max_attempts`` is spent.

        Returns whether the receiver accepted it; a message given up is logged and counted
        in :attr:`given_up`. Run it in a task of its own: it may sleep for minutes.
        """
        attempt = 1
        while True:
            try:
                await self.send(url, payload)
            except WebhookError as exc:
                if not exc.retryable or attempt >= self.settings.max_attempts:
                    self.given_up += 1
                    fleetdeck = payload.get("fleetdeck")
                    key = fleetdeck.get("idempotency_key") if isinstance(fleetdeck, dict) else None
                    log.warning("webhook %s: gave up on %s after %d attempt(s): %s",
                                url, key, attempt, exc)
                    return False
                delay = max(backoff_s(attempt, self.settings, rng), exc.retry_after_s or 0.0)
                await asyncio.sleep(min(delay, self.settings.backoff_max_s))
                attempt += 1
            else:
                self.delivered += 1
                return True
