"""The agent loop: sample every interval, spool, publish.

Sources are the real machine (:class:`agent.collectors.Sampler`) and/or simulated
servers; samples of many sources are spread evenly over the interval, as a real
fleet's would be.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from agent.publisher import Publisher
from agent.settings import AgentSettings
from agent.spool import Message, Spool
from schemas import MetricSample
from schemas.topics import METRICS

log = logging.getLogger(__name__)


class Source(Protocol):
    server_id: str

    def sample(self, seq: int) -> MetricSample | None: ...


class Agent:
    def __init__(self, settings: AgentSettings, sources: Sequence[Source],
                 on_sample: Callable[[MetricSample], None] | None = None) -> None:
        if not sources:
            raise ValueError("an agent needs at least one source")
        self.settings = settings
        self.sources = list(sources)
        self.spool = Spool(settings.spool_per_server * len(self.sources))
        self.publisher = Publisher(settings.kafka, METRICS, self.spool)
        self.samples = 0
        self._on_sample = on_sample

    async def run(self, seconds: float | None = None) -> None:
        """Sample and publish until cancelled or ``seconds`` have passed."""
        sender = asyncio.create_task(self.publisher.run(), name="agent-publisher")
        try:
            await self._sample_loop(seconds)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def flush(self, timeout: float) -> bool:
        """Publish what is spooled; True once the spool is empty, False after ``timeout``."""
        sender = asyncio.create_task(self.publisher.run(), name="agent-flush")
        try:
            async with asyncio.timeout(timeout):
                while len(self.spool):
                    await asyncio.sleep(0.02)
            return True
        except TimeoutError:
            return False
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _sample_loop(self, seconds: float | None) -> None:
        interval = self.settings.interval_s
        slots = min(len(self.sources), 50)  # spread sources over the interval in 50 slots
        start = time.time()
        tick = 0
        while seconds is None or time.time() - start < seconds:
            slot = tick % slots
            due = start + (tick // slots) * interval + slot * interval / slots
            await asyncio.sleep(max(0.0, due - time.time()))
            self._sample_slot(slot, slots, tick // slots)
            tick += 1

    def _sample_slot(self, slot: int, slots: int, seq: int) -> None:
        for source in self.sources[slot::slots]:
            try:
                sample = source.sample(seq)
            except Exception:  # one broken source must not stop the others
                log.exception("sampling %s failed", source.server_id)
                continue
            if sample is None:
                continue
            self.spool.append(Message(sample.server_id.encode(),
                                      sample.model_dump_json().encode()))
            self.samples += 1
            if self._on_sample is not None:
                self._on_sample(sample)
