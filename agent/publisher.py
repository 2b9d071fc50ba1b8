"""Delivers spooled messages to Kafka in order, riding out broker outages.

On any broker error the producer is dropped, and after a back-off the topics are
(re)created with their partition counts (an empty broker after a restart would
otherwise auto-create them with its defaults) and a new producer takes over.

A broker that keeps its log in memory (the embedded Tansu) loses, when it restarts, what
it had acknowledged but no consumer had read yet. So the publisher keeps the messages it
delivered during the last ``replay_window_s`` seconds and the offset last acknowledged per
partition; when an acknowledgement comes with a lower offset than the one before it on
that partition (the log started again), or the publisher had to create its topic again,
it sends those messages again. (aiokafka rides out a short broker restart by itself, so
the publisher may never see an error: the offsets are what tells.) Consumers see those
samples twice at worst: VictoriaMetrics deduplicates, and the worker shows a sample older
than its server's newest only on that server's stream. A durable Kafka never triggers it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError

from agent.spool import Message, Spool
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
                 batch: int = 2000, max_in_flight: int = 8,
                 replay_window_s: float = 30.0) -> None:
        self.settings = settings
        self.topic = topic
        self.spool = spool
        self.batch = batch
        self.max_in_flight = max_in_flight
        self.replay_window_s = replay_window_s
        self.sent = 0
        self.replayed = 0
        self.connected = False
        self._producer: AIOKafkaProducer | None = None
        #: (monotonic time delivered, message) of the last replay_window_s seconds
        self._history: deque[tuple[float, Message]] = deque(maxlen=spool.capacity)
        #: partition -> offset of the last message the broker acknowledged to us
        self._acked: dict[int, int] = {}
        #: why the history must be sent again (kept until a replay succeeds)
        self._replay_due: str | None = None
        #: the topic's partitions as the last producer saw them
        self._partitions: frozenset[int] = frozenset()

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
        in_flight: deque[tuple[int, list[Message], asyncio.Future[list[Any]]]] = deque()
        try:
            while True:
                while in_flight and in_flight[0][2].done():
                    through, messages, acked = in_flight.popleft()
                    # a failed batch raises here
                    went_back = self._delivered(messages, acked.result())
                    self.spool.commit(through)
                    self.sent += len(messages)
                    if went_back:
                        self._replay_due = f"offsets went back on partitions {went_back}"
                    elif (changed := self._partitions_changed(prod)) is not None:
                        self._replay_due = changed
                    if self._replay_due:
                        await self._replay(prod, timeout)
                if len(in_flight) < self.max_in_flight and self.spool.has_after(cursor):
                    through, messages = self.spool.peek(self.batch, after=cursor)
                    acked = asyncio.ensure_future(_delivered(await self._send(prod, messages),
                                                             timeout))
                    in_flight.append((through, messages, acked))
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

    async def _send(self, prod: AIOKafkaProducer,
                    messages: list[Message]) -> list[asyncio.Future[Any]]:
        futures = [await prod.send(self.topic.name, m.value, key=m.key) for m in messages]
        for future in futures:  # a failure after this pump gave up is only logged
            future.add_done_callback(_retrieve)
        return futures

    def _partitions_changed(self, prod: AIOKafkaProducer) -> str | None:
        """Why a replay is due when the producer's metadata shows the topic with other
        partitions than before (made again by the broker's auto-creation, on someone else's
        metadata request, with its default partition count: samples may then land where
        this publisher never had an offset to compare); None when they are the same."""
        known = prod.client.cluster.partitions_for_topic(self.topic.name)
        if not known:
            return None
        partitions, before = frozenset(known), self._partitions
        self._partitions = partitions
        if before and partitions != before and self._acked:
            return f"the topic came back with {len(partitions)} partitions, not {len(before)}"
        return None

    def _offsets(self, metadata: list[Any]) -> list[int]:
        """Note the acknowledged offsets; the partitions whose log went backwards."""
        went_back = set()
        for meta in metadata:
            last = self._acked.get(meta.partition)
            if last is not None and meta.offset < last:
                went_back.add(meta.partition)
            self._acked[meta.partition] = meta.offset
        return sorted(went_back)

    def _delivered(self, messages: list[Message], metadata: list[Any]) -> list[int]:
        """Remember a delivered batch for a replay; the partitions whose log went backwards
        (the history then holds what to send again)."""
        now = time.monotonic()
        went_back = self._offsets(metadata)
        self._history.extend((now, m) for m in messages)
        while self._history and self._history[0][0] < now - self.replay_window_s:
            self._history.popleft()
        return went_back

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            timeout = self.settings.request_timeout_ms / 1000 + 1
            async with asyncio.timeout(timeout):
                created = await ensure_topics(self.settings, [self.topic])
                prod = producer(self.settings)
                try:
                    await prod.start()
                    partitions = await prod.partitions_for(self.topic.name)  # its metadata
                except BaseException:
                    await prod.stop()
                    raise
            changed = self._partitions_changed(prod)
            if self.topic.name in created and self._acked:
                self._replay_due = "had to create the topic again"
            elif changed is not None:
                self._replay_due = changed
            if len(partitions) != self.topic.partitions:
                log.error("%s has %d partitions, not %d: it was created by the broker's "
                          "auto-creation, not by FleetDeck (consumers that rely on "
                          "co-partitioning, like alert acknowledgements, are misrouted)",
                          self.topic.name, len(partitions), self.topic.partitions)
            if self._replay_due:
                try:
                    await self._replay(prod, timeout)
                except BaseException:
                    await prod.stop()
                    raise
            self._producer = prod
            if not self.connected:
                log.info("connected to %s; %d samples to send", self.settings.bootstrap_servers,
                         len(self.spool))
            self.connected = True
        return self._producer

    async def _replay(self, prod: AIOKafkaProducer, timeout: float) -> None:
        """Send the delivered messages of the replay window again, oldest first (when
        this fails, the next producer tries again)."""
        messages = [m for _, m in self._history]
        log.warning("the broker lost messages it had acknowledged (%s); sending the last %d "
                    "delivered samples again", self._replay_due, len(messages))
        await _delivered(await self._send(prod, messages), timeout)
        # offsets of the old log mean nothing in the new one; those of the copies are not
        # noted either: batches still in flight were sent before them, so they have lower
        # offsets and would look like the log going back once more
        self._acked.clear()
        self._replay_due = None
        self.replayed += len(messages)

    async def _drop_producer(self) -> None:
        prod, self._producer = self._producer, None
        if prod is not None:
            try:
                await asyncio.wait_for(prod.stop(), 5)
            except (AIOKafkaError, OSError, TimeoutError) as exc:
                log.debug("producer stop failed: %r", exc)


async def _delivered(futures: list[asyncio.Future[Any]], timeout: float) -> list[Any]:
    """Until every future is acknowledged, then their record metadata; raise the first
    failure (every outcome is retrieved) or TimeoutError. The futures themselves are never
    cancelled here."""
    if not futures:
        return []
    done, pending = await asyncio.wait(futures, timeout=timeout)
    if pending:
        raise TimeoutError(f"{len(pending)} messages not acknowledged within {timeout:.0f} s")
    errors = [exc for exc in (f.exception() for f in done) if exc is not None]
    if errors:
        raise errors[0]
    return [f.result() for f in futures]


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("delivery failed: %r", future.exception())
