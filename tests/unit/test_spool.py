import pytest

from agent.spool import Message, Spool


def msg(i: int) -> Message:
    return Message(b"k", str(i).encode())


def test_order_peek_and_commit() -> None:
    spool = Spool(10)
    for i in range(5):
        spool.append(msg(i))
    assert [m.value for m in spool.peek(3)] == [b"0", b"1", b"2"]
    spool.commit(2)
    assert [m.value for m in spool.peek(10)] == [b"2", b"3", b"4"]


def test_full_spool_drops_oldest_and_counts() -> None:
    spool = Spool(3)
    for i in range(5):
        spool.append(msg(i))
    assert [m.value for m in spool.peek(10)] == [b"2", b"3", b"4"]
    assert spool.dropped == 2


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Spool(0)


async def test_wait_blocks_until_something_arrives() -> None:
    import asyncio

    spool = Spool(3)
    waiter = asyncio.create_task(spool.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    spool.append(msg(1))
    async with asyncio.timeout(1):
        await waiter
    spool.commit(1)
    assert len(spool) == 0
