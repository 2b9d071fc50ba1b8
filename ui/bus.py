"""The UI's producer on the event log: commands, alert actions and audit events.

One producer per process, started on first use (the dashboard works while the broker is
away; only what must go through the log answers 503).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError
from starlette.requests import Request

from connectors.kafka import producer
from schemas.audit import AuditEvent
from schemas.topics import AUDIT, Topic
from ui.errors import APIError

log = logging.getLogger(__name__)
SEND_TIMEOUT_S = 10.0


async def _producer(request: Request) -> AIOKafkaProducer:
    state = request.app.state
    async with state.producer_lock:
        if state.producer is None:
            prod: AIOKafkaProducer = producer(state.settings.kafka, linger_ms=0)
            try:
                await prod.start()
            except (AIOKafkaError, OSError) as exc:
                await prod.stop()
                log.error("cannot connect to the event log: %r", exc)
                raise APIError(503, "upstream_unavailable",
                               "the event log is unreachable; try again") from None
            state.producer = prod
    return state.producer  # type: ignore[no-any-return]


async def send(request: Request, topic: Topic, key: str, value: bytes) -> None:
    """Produce one message and wait for the broker to take it (503 when it does not)."""
    prod = await _producer(request)
    try:
        await asyncio.wait_for(prod.send_and_wait(topic.name, value, key=key.encode()),
                               SEND_TIMEOUT_S)
    except (AIOKafkaError, OSError, TimeoutError) as exc:
        log.error("the event log did not take a message for %s: %r", topic.name, exc)
        raise APIError(503, "upstream_unavailable",
                       "the event log did not take the request; try again") from None


async def audit(request: Request, event: AuditEvent) -> None:
    """Put a mutation on the audit topic (one partition: the chain's order)."""
    await send(request, AUDIT, event.tenant, event.model_dump_json().encode())
