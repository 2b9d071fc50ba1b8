"""Batched, retrying writes to VictoriaMetrics with backpressure.

Lines are grouped into batches (by size or age). Full batches wait in a bounded queue;
when VictoriaMetrics is slow or down the queue fills and ``put`` waits, which slows the
consumer and leaves unread samples in Kafka instead of dropping them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from connectors.errors import ConnectorError
from connectors.victoriametrics import VictoriaMetricsError, VMClient, VMSettings

log = logging.getLogger(__name__)


class VMWriter:
    def __init__(self, client: VMClient, settings: VMSettings,
                 count: Callable[[str, int], Awaitable[None]] | None = None) -> None:
        self.client = client
        self.settings = settings
        self._count = count
        self._buffer: list[str] = []
        self._started = time.monotonic()
        self._queue: asyncio.Queue[list[str]] = asyncio.Queue(settings.queue_batches)

    async def put(self, lines: list[str]) -> None:
        if not self._buffer:
            self._started = time.monotonic()
        self._buffer.extend(lines)
        if len(self._buffer) >= self.settings.batch_lines:
            await self._seal()

    async def _seal(self) -> None:
        batch, self._buffer = self._buffer, []
        if batch:
            await self._queue.put(batch)  # waits when full: backpressure

    async def run(self) -> None:
        """Write batches forever; seal the open batch when it is older than the flush interval."""
        while True:
            try:
                batch = await asyncio.wait_for(self._queue.get(),
                                               timeout=self.settings.flush_interval_s)
            except TimeoutError:
                if self._buffer and (time.monotonic() - self._started
                                     >= self.settings.flush_interval_s):
                    await self._seal()
                continue
            await self._write(batch)
            if self._buffer and time.monotonic() - self._started >= self.settings.flush_interval_s:
                await self._seal()

    async def _write(self, batch: list[str]) -> None:
        delay = 0.2
        while True:
            try:
                await self.client.import_prometheus(batch)
            except VictoriaMetricsError as exc:
                if exc.rejected:  # a bad batch would block every later one: count, drop
                    log.error("victoriametrics refused %d lines, dropped: %s", len(batch), exc)
                    await self._counted("vm_lines_rejected", len(batch))
                    return
                log.warning("victoriametrics write failed, retrying in %.1fs: %s", delay, exc)
                await self._counted("vm_write_retries", 1)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            await self._counted("vm_lines_written", len(batch))
            return

    async def _counted(self, name: str, amount: int) -> None:
        if self._count is None:
            return
        try:
            await self._count(name, amount)
        except ConnectorError as exc:  # counters are best effort; the data path goes on
            log.debug("counter %s not updated: %s", name, exc)

    async def write(self, lines: list[str]) -> None:
        """Write ``lines`` now, retrying until VictoriaMetrics takes them (or refuses them)."""
        if lines:
            await self._write(lines)

    async def flush(self, timeout: float) -> bool:
        """Write the open batch and everything queued, for at most ``timeout`` seconds
        (used on shutdown, when the background writer is gone). True when all was written."""
        pending = [*self._drain_queue(), self._buffer]
        self._buffer = []
        try:
            async with asyncio.timeout(timeout):
                for batch in pending:
                    await self.write(batch)
        except TimeoutError:
            log.error("shutdown: %d lines not written to victoriametrics",
                      sum(len(b) for b in pending))
            return False
        return True

    def _drain_queue(self) -> list[list[str]]:
        batches = []
        while not self._queue.empty():
            batches.append(self._queue.get_nowait())
        return batches
