"""The agent's Kafka edge for commands: read ``fd.commands``, send ``fd.command-events``.

A real agent reads only the partition its server id hashes to (Kafka's default partitioner,
which the control plane's producer uses) and skips other keys; a simulator serving many
servers reads every partition. The position is committed to Kafka under a consumer group of
the agent's own, so commands sent while the agent was away arrive when it comes back (and
are refused if they expired meanwhile). A brand-new agent starts at the end of the topic.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.partitioner import murmur2
from pydantic import ValidationError

from agent.executor import Executor
from connectors.kafka import KafkaError, KafkaSettings, ensure_topics, producer
from schemas.commands import CommandEvent, SignedCommand
from schemas.topics import COMMAND_EVENTS, COMMANDS

log = logging.getLogger(__name__)

#: servers whose commands one listener handles at the same time (a simulator serves many)
MAX_SERVERS_AT_ONCE = 64
#: batches fetched whose handling has not finished; the fetch loop waits beyond this
MAX_BATCHES_IN_FLIGHT = 8


def partition_of(server_id: str, partitions: int = COMMANDS.partitions) -> int:
    """The partition Kafka's default partitioner puts ``server_id``'s messages on."""
    return (murmur2(server_id.encode()) & 0x7FFFFFFF) % partitions


class EventSender:
    """Sends command events at once (no linger), retrying through broker outages."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer = producer(settings, linger_ms=0)
        self._started = False
        self._lock = asyncio.Lock()

    async def __call__(self, event: CommandEvent) -> None:
        value = event.model_dump_json().encode()
        delay = 0.2
        for _ in range(200):  # ~10 minutes of trying, then the report is given up (logged)
            try:
                await self._start()
                await self._producer.send_and_wait(COMMAND_EVENTS.name, value,
                                                   key=event.server_id.encode())
                return
            except (AIOKafkaError, OSError) as exc:
                log.warning("cannot send command event (%r); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.error("gave up sending %s of command %s", event.kind, event.command_id)

    async def _start(self) -> None:
        async with self._lock:
            if not self._started:
                await self._producer.start()
                self._started = True

    async def close(self) -> None:
        if self._started:
            await self._producer.stop()


class CommandListener:
    """Feeds the commands addressed to ``servers`` (server id -> tenant) to the executor."""

    def __init__(self, settings: KafkaSettings, servers: Mapping[str, str], executor: Executor,
                 *, group_id: str, fetch_max_wait_ms: int = 20) -> None:
        self.settings = settings
        self.servers = dict(servers)
        self.executor = executor
        self.group_id = group_id
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.received = 0
        self.ready = asyncio.Event()  # set once the consumer has its position
        # each server's newest handling task (at most one per server of ours), and all of them
        self._tails: dict[bytes, asyncio.Task[None]] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_SERVERS_AT_ONCE)

    async def run(self) -> None:
        """Listen forever (cancel to stop); a broker outage means a retry with back-off."""
        delay = 0.5
        while True:
            try:
                await ensure_topics(self.settings, [COMMANDS, COMMAND_EVENTS])
                await self._consume()
            except (AIOKafkaError, KafkaError, OSError) as exc:
                log.warning("command listener lost the broker (%r); retrying", exc)
                self.ready.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _partitions(self) -> list[TopicPartition]:
        wanted = sorted({partition_of(s) for s in self.servers})
        return [TopicPartition(COMMANDS.name, p) for p in wanted]

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers, group_id=self.group_id,
            client_id=f"{self.settings.client_id}-commands", enable_auto_commit=False,
            auto_offset_reset="latest", fetch_max_wait_ms=self.fetch_max_wait_ms,
            request_timeout_ms=self.settings.request_timeout_ms)

    async def _consume(self) -> None:
        """Fetch and hand over batches without waiting for the last one to be handled.

        aiokafka fetches a partition again only once its buffered records were taken, so a
        loop that handled (verify, fsync, ACK) and committed each batch before the next
        ``getmany`` added that time, plus a whole fetch wait, to the next command's latency.
        Here handling runs in tasks (each server's commands still in order, see
        :meth:`_schedule`) and a committer commits each batch's offsets once it and every
        batch before it are handled, so a restart never skips an unhandled command.

        When the broker fails, batches handed over are left to finish (a command counts as
        accepted from its ACK on: cut short there, its redelivery would be refused as a
        replay); when the listener is stopped (cancelled), they are cancelled, and the
        executor reports what it accepted but did not run."""
        consumer = self._consumer()
        await consumer.start()
        handled: asyncio.Queue[tuple[asyncio.Future[Any], dict[TopicPartition, int]]] = \
            asyncio.Queue(MAX_BATCHES_IN_FLIGHT)
        committer = asyncio.create_task(self._commit_in_order(consumer, handled))
        try:
            consumer.assign(self._partitions())
            for tp in consumer.assignment():
                await consumer.position(tp)  # fixes "latest" now, before anything is sent
            self.ready.set()
            while not committer.done():
                batches = await consumer.getmany(timeout_ms=1000)
                if batches:
                    offsets = {tp: rs[-1].offset + 1 for tp, rs in batches.items()}
                    batch = self._schedule([r for rs in batches.values() for r in rs])
                    # waits while too many are in flight, unless the committer has stopped
                    put = asyncio.ensure_future(handled.put((batch, offsets)))
                    try:
                        await asyncio.wait([put, committer],
                                           return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        put.cancel()  # (no-op once it is done)
            await committer  # it stopped: raise what stopped it
        except asyncio.CancelledError:
            for task in self._in_flight:
                task.cancel()
            raise
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            await consumer.stop()

    @staticmethod
    async def _commit_in_order(consumer: AIOKafkaConsumer, handled: asyncio.Queue[
            tuple[asyncio.Future[Any], dict[TopicPartition, int]]]) -> None:
        """Commit each batch's offsets once its handling is done, in the order fetched."""
        while True:
            batch, offsets = await handled.get()
            await asyncio.shield(batch)  # stopping the committer must not cut a batch short
            await consumer.commit(offsets)

    def _schedule(self, records: list[ConsumerRecord[bytes, bytes]]) -> asyncio.Future[Any]:
        """Start handling ``records``: each server's commands in the order they came, after
        that server's earlier ones (its tasks are chained here, synchronously, in fetch
        order); different servers' side by side (at most :data:`MAX_SERVERS_AT_ONCE`), so a
        simulator's ACK for one server does not wait for the broker to take another
        server's ACK. A real agent has one server. Records of other servers (a shared
        partition) are skipped. Returns a future done when all of them are handled."""
        by_server: dict[bytes, list[ConsumerRecord[bytes, bytes]]] = {}
        for record in records:
            if record.key is not None and record.key.decode(errors="replace") in self.servers:
                by_server.setdefault(record.key, []).append(record)
        parts = []
        for key, server_records in by_server.items():
            task = asyncio.create_task(self._in_turn(self._tails.get(key), server_records))
            self._tails[key] = task  # at most one per server of ours
            self._in_flight.add(task)
            task.add_done_callback(functools.partial(self._done, key))
            parts.append(task)
        return asyncio.gather(*parts)

    async def _in_turn(self, before: asyncio.Task[None] | None,
                       records: list[ConsumerRecord[bytes, bytes]]) -> None:
        if before is not None:
            await asyncio.wait([before])  # its own outcome; being cancelled never cancels it
        async with self._slots:
            for record in records:
                await self._handle(record.key, record.value)

    def _done(self, key: bytes, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _handle(self, key: bytes | None, value: bytes | None) -> None:
        server_id = key.decode(errors="replace") if key else ""
        tenant = self.servers.get(server_id)
        if tenant is None or value is None:
            return  # another server's command on a shared partition
        self.received += 1
        try:
            signed = SignedCommand.model_validate_json(value)
        except ValidationError as exc:
            log.warning("undecodable command for %s dropped: %s", server_id,
                        exc.errors()[0]["msg"])
            return
        try:
            await self.executor.receive(signed, tenant=tenant, server_id=server_id)
        except Exception:  # never let one command stop the listener
            log.exception("command for %s could not be handled", server_id)
