"""The store worker's side of alerting: ``fd.alerts`` → SQL history → webhook receivers.

Exactly-once from a receiver's point of view, as far as a crash allows:

1. every event is recorded under its unique ``(alert_id, seq)``; a redelivered event
   (the worker restarted before committing its offset) is recognised and dropped;
2. a notifying event is put in an outbox row unique per ``(alert_id, seq, receiver)``
   in the same step, before the Kafka offset is committed;
3. the dispatcher sends due outbox rows and marks them sent; failures are retried with
   exponential backoff, then given up (logged and counted). Only a crash between a
   receiver's 2xx and marking the row sent can repeat a notification, and the repeat
   carries the same ``Idempotency-Key`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from connectors.sql import SQLError, SQLStore
from connectors.webhook import (
    WebhookError,
    WebhookNotifier,
    WebhookSettings,
    alertmanager_payload,
    backoff_s,
)
from schemas.alerts import AlertEvent

log = logging.getLogger(__name__)


class AlertSink:
    def __init__(self, sql: SQLStore, settings: WebhookSettings) -> None:
        self.sql = sql
        self.settings = settings
        self.notifier = WebhookNotifier(settings)
        self._wake = asyncio.Event()

    async def record(self, raw_events: list[bytes | None]) -> None:
        """Store a batch of events; raises SQLError so the batch is not acknowledged."""
        queued = False
        for raw in raw_events:
            try:
                event = AlertEvent.model_validate_json(raw or b"")
            except ValueError as exc:
                log.warning("ignoring an invalid alert event: %s", str(exc)[:300])
                continue
            new = await self.sql.record_alert_event(event)
            if not (new and event.notify):
                continue
            for url in self.settings.urls:
                payload = alertmanager_payload(event, url, self.settings.external_url)
                queued |= await self.sql.enqueue_notification(event.alert_id, event.seq, url,
                                                              payload)
        if queued:
            self._wake.set()

    async def run(self) -> None:
        """Send due notifications until cancelled."""
        try:
            while True:
                try:
                    sent = await self.dispatch()
                except SQLError as exc:
                    log.error("cannot read the notification outbox: %s", exc)
                    sent = 0
                if not sent:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 1.0)
        finally:
            await self.notifier.close()

    async def dispatch(self) -> int:
        """Send what is due now; returns how many rows were handled."""
        now = datetime.now(UTC)
        due = await self.sql.due_notifications(now)
        for item in due:
            try:
                await self.notifier.send(item.receiver, item.payload)
            except WebhookError as exc:
                attempt = item.attempts + 1
                if not exc.retryable or attempt >= self.settings.max_attempts:
                    log.error("giving up notification %s:%s to %s after %d attempts: %s",
                              item.alert_id, item.seq, item.receiver, attempt, exc)
                    await self.sql.notification_failed(item.id, str(exc), None)
                else:
                    delay = max(backoff_s(attempt, self.settings), exc.retry_after_s or 0.0)
                    log.warning("notification %s:%s to %s failed (%s); retry in %.1f s",
                                item.alert_id, item.seq, item.receiver, exc, delay)
                    await self.sql.notification_failed(
                        item.id, str(exc), datetime.now(UTC) + timedelta(seconds=delay))
                continue
            await self.sql.notification_sent(item.id, datetime.now(UTC))
        return len(due)
