"""Delivers spooled messages to Kafka in order, riding out broker outages.

On any broker error the producer is dropped, and after a back-off the topics are
(re)created with their partition counts (an empty broker after a restart would
otherwise auto-create them with its defaults) and a new producer takes over.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError

from agent.spool import Spool
from connectors.kafka import KafkaError, KafkaSettings, ensure_topics, producer
from schemas.topics import Topic

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, settings: KafkaSettings, topic: Topic, spool: Spool,
                 batch: int = 2000) -> None:
        self.settings = settings
        self.topic = topic
        self.spool = spool
        self.batch = batch
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
                    await self._deliver()
                    delay = 0.5
                except (AIOKafkaError, KafkaError, OSError, TimeoutError) as exc:
                    if self.connected:
                        log.warning("broker unreachable (%r); spooling", exc)
                    self.connected = False
                    await self._drop_producer()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            await self._drop_producer()

    async def _deliver(self) -> None:
        prod = await self._ensure_producer()
        through, messages = self.spool.peek(self.batch)
        futures = [await prod.send(self.topic.name, m.value, key=m.key) for m in messages]
        timeout = self.settings.request_timeout_ms / 1000
        async with asyncio.timeout(timeout + 1):
            await asyncio.gather(*futures)
        self.spool.commit(through)
        self.sent += len(messages)

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
