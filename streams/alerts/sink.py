"""The store worker's side of alerting: ``fd.alerts`` → SQL history → webhook receivers.

Exactly-once from a receiver's point of view, as far as a crash allows:

1. every event is recorded under its unique ``(alert_id, seq)``; a redelivered event
   (the worker restarted before committing its offset) changes nothing twice;
2. a notifying event is put in an outbox row unique per ``(alert_id, seq, receiver)``
   before the Kafka offset is committed (again on a redelivery: the unique key makes
   that a no-op, and it covers a crash between the two writes);
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

    async def record(self, raw_events: list[bytes | None]) -> int:
        """Store a batch of events. A database that cannot be reached raises SQLError (the
        batch is not acknowledged and comes again); an event the database refuses is
        logged, counted and skipped, so one bad event never stops the others. Returns
        how many were skipped."""
        queued, skipped = False, 0
        for raw in raw_events:
            try:
                event = AlertEvent.model_validate_json(raw or b"")
            except ValueError as exc:
                log.warning("ignoring an invalid alert event: %s", str(exc)[:300])
                skipped += 1
                continue
            try:
                await self.sql.record_alert_event(event)
                if not event.notify:
                    continue
                for url in self.settings.urls:
                    payload = alertmanager_payload(event, url, self.settings.external_url)
                    queued |= await self.sql.enqueue_notification(event.alert_id, event.seq,
                                                                  url, payload)
            except SQLError as exc:
                if exc.unreachable:
                    raise
                log.error("the SQL store refused alert event %s:%s, skipped: %s",
                          event.alert_id, event.seq, exc)
                skipped += 1
        if queued:
            self._wake.set()
        return skipped

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
            except Exception as exc:  # a receiver's fault never stops the loop
                if not isinstance(exc, WebhookError):
                    log.exception("unexpected error notifying %s", item.receiver)
                    exc = WebhookError(f"unexpected error: {exc!r}", retryable=True)
                attempt = item.attempts + 1
                if not exc.retryable or attempt >= self.settings.max_attempts:
                    log.error("giving up notification %s:%s to %s after %d attempts: %s",
                              item.alert_id, item.seq, item.receiver, attempt, exc)
                    await self.sql.notification_failed(item.id, str(exc), None)
                else:
                    delay = min(max(backoff_s(attempt, self.settings), exc.retry_after_s or 0.0),
                                self.settings.backoff_max_s)  # a receiver's Retry-After, capped
                    log.warning("notification %s:%s to %s failed (%s); retry in %.1f s",
                                item.alert_id, item.seq, item.receiver, exc, delay)
                    await self.sql.notification_failed(
                        item.id, str(exc), datetime.now(UTC) + timedelta(seconds=delay))
                continue
            await self.sql.notification_sent(item.id, datetime.now(UTC))
        return len(due)
