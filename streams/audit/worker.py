"""The control role's audit sink: ``fd.audit`` → the append-only, hash-chained SQL log.

``fd.audit`` has one partition, so one worker appends in the order events were produced; the
store chains each record to the previous one and skips event ids it holds already, so a batch
delivered again after a restart appends nothing twice.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from connectors.sql import SQLStore
from schemas.audit import AuditEvent

log = logging.getLogger(__name__)


class AuditSink:
    def __init__(self, sql: SQLStore) -> None:
        self.sql = sql
        self.appended = 0

    async def record(self, raw_events: list[bytes | None]) -> tuple[int, list[bytes]]:
        """Append a batch; returns (appended, undecodable raw events for the dead letters).
        SQLError propagates: nothing of the batch is acknowledged, it comes again."""
        events, bad = [], []
        for raw in raw_events:
            try:
                events.append(AuditEvent.model_validate_json(raw or b""))
            except ValidationError as exc:
                log.error("undecodable audit event: %s", str(exc)[:300])
                bad.append(raw or b"")
        appended = await self.sql.append_audit(events) if events else 0
        self.appended += appended
        return appended, bad
