"""A broker outage loses nothing: agents spool, the broker comes back empty, all arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
import redis

from agent.runner import Agent
from agent.settings import AgentSettings
from connectors.kafka import KafkaSettings
from fleetdeck.stack import EmbeddedStack
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
