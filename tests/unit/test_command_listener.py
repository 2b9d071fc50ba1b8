"""The agent's command listener hands batches over without waiting for the last one: a
server's commands stay in order across batches, other servers' are not held up, and offsets
are committed in the order fetched, each only once its batch (and every earlier one) is done."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError

from agent.commands import CommandListener
from connectors.kafka import KafkaSettings

TP = TopicPartition("fd.commands", 0)


def _record(key: bytes, value: bytes, offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic=TP.topic, partition=TP.partition, offset=offset, timestamp=0,
                          timestamp_type=0, key=key, value=value, checksum=None,
                          serialized_key_size=len(key), serialized_value_size=len(value),
                          headers=())


def _listener(handled: list[bytes], slow: dict[bytes, float]) -> CommandListener:
    listener = CommandListener(KafkaSettings(), {"s1": "default", "s2": "default"},
                               executor=None, group_id="test")  # type: ignore[arg-type]

    async def handle(key: bytes | None, value: bytes | None) -> None:
        assert value is not None
        await asyncio.sleep(slow.get(value, 0.0))
        handled.append(value)

    listener._handle = handle  # type: ignore[method-assign]
    return listener


async def test_a_servers_commands_keep_their_order_across_batches() -> None:
    handled: list[bytes] = []
    listener = _listener(handled, slow={b"s1-first": 0.1})
    first = listener._schedule([_record(b"s1", b"s1-first"), _record(b"s2", b"s2-only")])
    second = listener._schedule([_record(b"s1", b"s1-second")])
    async with asyncio.timeout(5):
        await asyncio.gather(first, second)
    # s2 did not wait for s1's slow command; s1's second command waited for its first
    assert handled == [b"s2-only", b"s1-first", b"s1-second"]
    assert not listener._tails and not listener._in_flight  # nothing kept once done


async def test_commands_for_other_servers_are_skipped() -> None:
    handled: list[bytes] = []
    listener = _listener(handled, slow={})
    async with asyncio.timeout(5):
        await listener._schedule([_record(b"elsewhere", b"x"), _record(b"s2", b"mine")])
    assert handled == [b"mine"]


class _Consumer:
    """Hands out the given batches, then nothing; ``commit`` raises ``fail`` if set."""

    def __init__(self, batches: list[list[ConsumerRecord[bytes, bytes]]] | None = None,
                 fail: Exception | None = None) -> None:
        self.batches = list(batches or [])
        self.fail = fail
        self.commits: list[dict[TopicPartition, int]] = []
        self.stopped = False

    async def start(self) -> None:
        return None

    def assign(self, parts: list[TopicPartition]) -> None:
        self.parts = parts

    def assignment(self) -> set[TopicPartition]:
        return set(self.parts)

    async def position(self, tp: TopicPartition) -> int:
        return 0

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, Any]:
        if self.batches:
            return {TP: self.batches.pop(0)}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail is not None:
            raise self.fail
        self.commits.append(offsets)

    async def stop(self) -> None:
        self.stopped = True


async def test_a_broker_failure_lets_the_batches_handed_over_finish() -> None:
    """Cut off between being remembered and its ACK, a command would never run: its
    redelivery is refused as a replay. So a failure stops fetching, not handling."""
    handled: list[bytes] = []
    listener = _listener(handled, slow={b"a": 0.2, b"b": 0.2})
    consumer = _Consumer([[_record(b"s1", b"a", 0)], [_record(b"s2", b"b", 1)]],
                         fail=KafkaConnectionError())
    listener._consumer = lambda: consumer  # type: ignore[assignment, method-assign]
    async with asyncio.timeout(5):
        with pytest.raises(KafkaConnectionError):
            await listener._consume()
        assert consumer.stopped and consumer.commits == []
        while listener._in_flight:
            await asyncio.sleep(0.01)
    assert sorted(handled) == [b"a", b"b"]


async def test_stopping_the_listener_cancels_what_it_handed_over() -> None:
    handled: list[bytes] = []
    listener = _listener(handled, slow={b"a": 30})
    consumer = _Consumer([[_record(b"s1", b"a", 0)]])
    listener._consumer = lambda: consumer  # type: ignore[assignment, method-assign]
    consuming = asyncio.create_task(listener._consume())
    async with asyncio.timeout(5):
        while not listener._in_flight:
            await asyncio.sleep(0.01)
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        while listener._in_flight:
            await asyncio.sleep(0.01)
    assert consumer.stopped and handled == [] and consumer.commits == []


async def test_offsets_are_committed_in_fetch_order_once_each_batch_is_done() -> None:
    consumer = _Consumer()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    slow_done = asyncio.Event()

    async def slow() -> None:
        await slow_done.wait()

    async def fast() -> None:
        return None

    await queue.put((asyncio.create_task(slow()), {TP: 1}))
    await queue.put((asyncio.create_task(fast()), {TP: 2}))
    committer = asyncio.create_task(
        CommandListener._commit_in_order(consumer, queue))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert consumer.commits == []  # the later batch is done, the earlier one is not
    slow_done.set()
    async with asyncio.timeout(5):
        while len(consumer.commits) < 2:
            await asyncio.sleep(0.01)
    committer.cancel()
    await asyncio.gather(committer, return_exceptions=True)
    assert consumer.commits == [{TP: 1}, {TP: 2}]
