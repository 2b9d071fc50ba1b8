import asyncio

import pytest

from agent.spool import Message, Spool


def msg(i: int) -> Message:
    return Message(b"k", str(i).encode())


def values(spool: Spool) -> list[bytes]:
    return [m.value for m in spool.peek(100)[1]]


def test_order_peek_and_commit() -> None:
    spool = Spool(10)
    for i in range(5):
        spool.append(msg(i))
    through, head = spool.peek(3)
    assert [m.value for m in head] == [b"0", b"1", b"2"]
    spool.commit(through)
    assert values(spool) == [b"3", b"4"]


def test_full_spool_drops_oldest_and_counts() -> None:
    spool = Spool(3)
    for i in range(5):
        spool.append(msg(i))
    assert values(spool) == [b"2", b"3", b"4"]
    assert spool.dropped == 2


def test_drops_during_delivery_never_discard_unsent_messages() -> None:
    spool = Spool(5)
    for i in range(5):
        spool.append(msg(i))
    through, sending = spool.peek(3)  # 0, 1, 2 in flight
    spool.append(msg(5))  # full: drops 0
    spool.append(msg(6))  # drops 1
    spool.commit(through)  # 0..2 delivered
    assert [m.value for m in sending] == [b"0", b"1", b"2"]
    assert values(spool) == [b"3", b"4", b"5", b"6"]
    assert spool.dropped == 2


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Spool(0)


async def test_wait_blocks_until_something_arrives() -> None:
    spool = Spool(3)
    waiter = asyncio.create_task(spool.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    spool.append(msg(1))
    async with asyncio.timeout(1):
        await waiter
    spool.commit(spool.peek(1)[0])
    assert len(spool) == 0


def test_peek_after_a_cursor_returns_only_newer_messages() -> None:
    spool = Spool(10)
    for i in range(6):
        spool.append(msg(i))
    first, sent = spool.peek(2)  # 0, 1 in flight
    second, more = spool.peek(3, after=first)  # 2, 3, 4 in flight too
    assert [m.value for m in sent] == [b"0", b"1"]
    assert [m.value for m in more] == [b"2", b"3", b"4"]
    assert spool.has_after(second)
    assert spool.peek(10, after=second + 1) == (second + 1, [])
    assert not spool.has_after(second + 1)
    spool.commit(first)  # acknowledgements arrive in order
    assert values(spool) == [b"2", b"3", b"4", b"5"]


def test_peek_after_a_cursor_whose_messages_were_dropped() -> None:
    spool = Spool(3)
    for i in range(3):
        spool.append(msg(i))
    cursor, _ = spool.peek(1)  # 0 in flight
    for i in range(3, 6):
        spool.append(msg(i))  # 0, 1, 2 dropped for space
    _, rest = spool.peek(10, after=cursor)
    assert [m.value for m in rest] == [b"3", b"4", b"5"]


async def test_wait_after_a_cursor_blocks_until_a_newer_message() -> None:
    spool = Spool(5)
    spool.append(msg(0))
    cursor, _ = spool.peek(1)
    waiter = asyncio.create_task(spool.wait(after=cursor))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # message 0 is already handed out
    spool.append(msg(1))
    async with asyncio.timeout(1):
        await waiter


def test_publisher_notices_a_log_that_went_back() -> None:
    from types import SimpleNamespace

    from agent.publisher import Publisher
    from connectors.kafka import KafkaSettings
    from schemas.topics import METRICS

    publisher = Publisher(KafkaSettings(), METRICS, Spool(10))

    def acks(*pairs: tuple[int, int]) -> list[SimpleNamespace]:
        return [SimpleNamespace(partition=p, offset=o) for p, o in pairs]

    m = Message(b"k", b"v")
    assert publisher._delivered([m, m], acks((0, 5), (1, 7))) == []
    assert publisher._delivered([m], acks((0, 6))) == []
    # partition 1 starts again at 0 (the broker came back empty): what it held is lost
    assert publisher._delivered([m, m], acks((1, 0), (0, 7))) == [1]
    assert len(publisher._history) == 5  # what a replay would send again
