"""The agent's command listener hands batches over without waiting for the last one: a
server's commands stay in order across batches, other servers' are not held up, and offsets
are committed in the order fetched, each only once its batch (and every earlier one) is done."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

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
    first = asyncio.create_task(listener._handle_batch(
        [_record(b"s1", b"s1-first"), _record(b"s2", b"s2-only")]))
    second = asyncio.create_task(listener._handle_batch([_record(b"s1", b"s1-second")]))
    await asyncio.gather(first, second)
    # s2 did not wait for s1's slow command; s1's second command waited for its first
    assert handled == [b"s2-only", b"s1-first", b"s1-second"]


async def test_commands_for_other_servers_are_skipped() -> None:
    handled: list[bytes] = []
    listener = _listener(handled, slow={})
    await listener._handle_batch([_record(b"elsewhere", b"x"), _record(b"s2", b"mine")])
    assert handled == [b"mine"]


class _Consumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


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
    for _ in range(100):
        if len(consumer.commits) == 2:
            break
        await asyncio.sleep(0.01)
    committer.cancel()
    await asyncio.gather(committer, return_exceptions=True)
    assert consumer.commits == [{TP: 1}, {TP: 2}]
