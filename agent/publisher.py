"""Delivers spooled messages to Kafka in order, riding out broker outages.

On any broker error the producer is dropped, and after a back-off the topics are
(re)created with their partition counts (an empty broker after a restart would
otherwise auto-create them with its defaults) and a new producer takes over.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError

from agent.spool import Spool
from connectors.kafka import KafkaError, KafkaSettings, ensure_topics, producer
from schemas.topics import Topic

log = logging.getLogger(__name__)


class Publisher:
    """Sends spooled messages as they arrive, with up to ``max_in_flight`` batches
    awaiting their acknowledgement, and commits them from the spool in order.

    A batch does not wait for the previous one's acknowledgement (that wait would sit
    between a sample being taken and being sent); on any failure every unacknowledged
    message is sent again, in order, by the next producer (at least once)."""

    def __init__(self, settings: KafkaSettings, topic: Topic, spool: Spool,
                 batch: int = 2000, max_in_flight: int = 8) -> None:
        self.settings = settings
        self.topic = topic
        self.spool = spool
        self.batch = batch
        self.max_in_flight = max_in_flight
        self.sent = 0
        self.connected = False
        self._producer: AIOKafkaProducer | None = None

    async def run(self) -> None:
        """Publish forever (cancel to stop)."""
        delay = 0.5
        try:
            while True:
                await self.spool.wait()
                try:
                    await self._pump()
                except (AIOKafkaError, KafkaError, OSError, TimeoutError) as exc:
                    if self.connected:
                        log.warning("broker unreachable (%r); spooling", exc)
                    self.connected = False
                    await self._drop_producer()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                else:
                    delay = 0.5
        finally:
            await self._drop_producer()

    async def _pump(self) -> None:
        """Send and commit until a broker error (raised) or cancellation."""
        prod = await self._ensure_producer()
        timeout = self.settings.request_timeout_ms / 1000 + 1
        cursor = -1  # sequence number of the newest message handed to the producer
        in_flight: deque[tuple[int, int, asyncio.Future[Any]]] = deque()
        try:
            while True:
                while in_flight and in_flight[0][2].done():
                    through, count, acked = in_flight.popleft()
                    acked.result()  # a failed batch raises here
                    self.spool.commit(through)
                    self.sent += count
                if len(in_flight) < self.max_in_flight and self.spool.has_after(cursor):
                    through, messages = self.spool.peek(self.batch, after=cursor)
                    futures = [await prod.send(self.topic.name, m.value, key=m.key)
                               for m in messages]
                    for future in futures:  # a failure after this pump gave up is only logged
                        future.add_done_callback(_retrieve)
                    acked = asyncio.ensure_future(_delivered(futures, timeout))
                    in_flight.append((through, len(messages), acked))
                    cursor = through
                    continue
                oldest = in_flight[0][2] if in_flight else None
                more = (asyncio.ensure_future(self.spool.wait(after=cursor))
                        if len(in_flight) < self.max_in_flight else None)
                try:
                    await asyncio.wait([f for f in (oldest, more) if f is not None],
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if more is not None:
                        more.cancel()
        finally:
            for _through, _count, acked in in_flight:
                acked.cancel()
            await asyncio.gather(*(a for _t, _c, a in in_flight), return_exceptions=True)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with asyncio.timeout(self.settings.request_timeout_ms / 1000 + 1):
                await ensure_topics(self.settings, [self.topic])
                prod = producer(self.settings)
                try:
                    await prod.start()
                except BaseException:
                    await prod.stop()
                    raise
            self._producer = prod
            if not self.connected:
                log.info("connected to %s; %d samples to send", self.settings.bootstrap_servers,
                         len(self.spool))
            self.connected = True
        return self._producer

    async def _drop_producer(self) -> None:
        prod, self._producer = self._producer, None
        if prod is not None:
            try:
                await asyncio.wait_for(prod.stop(), 5)
            except (AIOKafkaError, OSError, TimeoutError) as exc:
                log.debug("producer stop failed: %r", exc)


async def _delivered(futures: list[asyncio.Future[Any]], timeout: float) -> None:
    """Until every future is acknowledged; raise the first failure (every outcome is
    retrieved) or TimeoutError. The futures themselves are never cancelled here."""
    done, pending = await asyncio.wait(futures, timeout=timeout)
    if pending:
        raise TimeoutError(f"{len(pending)} messages not acknowledged within {timeout:.0f} s")
    errors = [exc for exc in (f.exception() for f in done) if exc is not None]
    if errors:
        raise errors[0]


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("delivery failed: %r", future.exception())
