"""A broker outage loses nothing: agents spool, the broker comes back empty, all arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError

from agent.publisher import Publisher
from agent.runner import Agent
from agent.settings import AgentSettings
from agent.spool import Message, Spool
from connectors.kafka import KafkaSettings, producer
from fleetdeck.settings import StackSettings
from fleetdeck.stack import EmbeddedStack
from schemas.topics import METRICS
from tests.conftest import eventually, running_stack, sim_servers

pytestmark = pytest.mark.integration

OUTAGE_S = 20


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    with running_stack(tmp_path_factory.mktemp("outage"), "outage") as stack:
        yield stack


def seqs(stack: EmbeddedStack, server_id: str) -> list[int]:
    client = redis.Redis.from_url(stack.endpoints.redis_url, decode_responses=True)
    key = f"{stack.endpoints.redis_prefix}live:server:{server_id}"
    try:
        return [orjson.loads(f["data"])["seq"] for _, f in client.xrange(key)
                if f["event"] == "sample"]
    finally:
        client.close()


async def test_samples_taken_during_an_outage_arrive_after_it(own_stack: EmbeddedStack) -> None:
    sims = sim_servers(3)
    agent = Agent(AgentSettings(kafka=KafkaSettings(bootstrap_servers=own_stack.endpoints.kafka,
                                                    request_timeout_ms=3000)), sims)
    task = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: _all_seen(own_stack, sims, 15), timeout=90)
        broker = next(s for s in own_stack.services if s.name.startswith("kafka"))
        worker = next(s for s in own_stack.services if s.name.startswith("streams"))
        worker_pid = worker.pid
        own_stack.supervisor.stop(broker)
        await asyncio.sleep(OUTAGE_S)
        assert len(agent.spool) >= OUTAGE_S * len(sims) * 0.8  # samples were spooled
        own_stack.supervisor.restart_exited()  # the broker comes back with empty logs
        taken = agent.samples
        await eventually(lambda: _all_seen(own_stack, sims, taken // len(sims) + 3),
                         timeout=90)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert agent.spool.dropped == 0
    assert worker.pid == worker_pid and worker.status == "running"  # nothing else restarted
    for sim in sims:
        got = sorted(set(seqs(own_stack, sim.server_id)))
        assert got == list(range(got[0], got[-1] + 1)), f"gap in {sim.server_id}"
        assert got[0] == 0

async def test_samples_the_broker_lost_unread_are_sent_again(own_stack: EmbeddedStack) -> None:
    """What the broker acknowledged but nobody read before it restarted empty comes again:
    the live worker is stopped first, so the samples of those seconds exist only in the
    broker's memory when it goes."""
    sims = sim_servers(2)
    agent = Agent(AgentSettings(kafka=KafkaSettings(bootstrap_servers=own_stack.endpoints.kafka,
                                                    request_timeout_ms=3000)), sims)
    task = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: _all_seen(own_stack, sims, 5), timeout=90)
        broker = next(s for s in own_stack.services if s.name.startswith("kafka"))
        live = next(s for s in own_stack.services if s.name == "streams-live")
        own_stack.supervisor.stop(live)
        delivered = agent.publisher.sent
        await eventually(lambda: _sent_more(agent, delivered + 4 * len(sims)), timeout=30)
        own_stack.supervisor.stop(broker)
        own_stack.supervisor.restart_exited()
        taken = agent.samples
        await eventually(lambda: _all_seen(own_stack, sims, taken // len(sims) + 2),
                         timeout=120, describe=lambda: _missing(own_stack, sims))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert agent.publisher.replayed >= 4 * len(sims)
    for sim in sims:
        got = sorted(set(seqs(own_stack, sim.server_id)))
        assert got == list(range(0, got[-1] + 1)), f"gap in {sim.server_id}"


def _missing(stack: EmbeddedStack, sims: list) -> dict[str, list[int]]:
    """Per server, the sequence numbers missing below its newest one on the live stream."""
    found = {s.server_id: set(seqs(stack, s.server_id)) for s in sims}
    return {sid: sorted(set(range(max(got, default=0))) - got) for sid, got in found.items()}


async def _sent_more(agent: Agent, count: int) -> bool:
    return agent.publisher.sent >= count


async def _all_seen(stack: EmbeddedStack, sims: list, count: int) -> bool:
    return all(len(set(seqs(stack, s.server_id))) >= count for s in sims)


async def test_a_topic_the_broker_made_again_with_other_partitions_gets_the_samples_again(
        tmp_path: Path) -> None:
    """After an empty restart, another client's metadata request may make the broker create
    the metrics topic with its default partition count before the agent's own check does:
    the agent sees the partitions change and sends what the broker lost again."""
    stack = EmbeddedStack(StackSettings(data_dir=tmp_path, kafka_port=0, vm_port=0, ui_port=0))
    try:
        broker = await asyncio.to_thread(stack.start_kafka)
        kafka = KafkaSettings(bootstrap_servers=stack.endpoints.kafka, request_timeout_ms=3000)
        spool = Spool(1000)
        publisher = Publisher(kafka, METRICS, spool)
        first = [Message(f"server-{i % 5}".encode(), f"before-{i}".encode()) for i in range(20)]
        for message in first:
            spool.append(message)
        task = asyncio.create_task(publisher.run())
        await eventually(lambda: _sent_at_least(publisher, 20), timeout=30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        stack.supervisor.stop(broker)
        broker.after_restart = None  # as if a client got there before the stack's own check
        stack.supervisor.restart_exited()  # empty
        # the broker's auto-creation: 4 partitions, not 8
        assert await eventually(lambda: _auto_created(kafka), timeout=30) != METRICS.partitions
        spool.append(Message(b"server-0", b"after"))
        task = asyncio.create_task(publisher.run())
        await eventually(lambda: _sent_at_least(publisher, 21), timeout=30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert publisher.replayed == 20
        values = await _read_all(kafka, METRICS.name, 22)
        assert {m.value for m in first} | {b"after", b"other"} == set(values)
    finally:
        stack.stop()


async def _auto_created(kafka: KafkaSettings) -> int | None:
    """Send one message to the metrics topic as another client would (the broker creates
    the topic if it has none); its partition count, or None while the broker is not up."""
    other = producer(kafka, linger_ms=0)
    try:
        await other.start()
        await other.send_and_wait(METRICS.name, b"other", key=b"x")
        return len(await other.partitions_for(METRICS.name))
    except KafkaConnectionError:
        return None
    finally:
        await other.stop()


async def _sent_at_least(publisher: Publisher, count: int) -> bool:
    return publisher.sent >= count


async def _read_all(kafka: KafkaSettings, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=None)
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(values) < count:
                batch = await consumer.getmany(timeout_ms=500)
                values.extend(r.value for records in batch.values() for r in records)
    finally:
        await consumer.stop()
    return values
