"""Shared fixtures: the real embedded stack (Tansu, VictoriaMetrics, Redis, worker, UI).

One stack per test session, each with its own Redis key prefix and data directory.
Tests run simulated agents in-process so they can steer them (force critical, silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from agent.runner import Agent
from agent.settings import AgentSettings
from agent.simulate import SimulatedServer
from connectors.kafka import KafkaSettings
from fleetdeck.settings import StackSettings
from fleetdeck.stack import EmbeddedStack


def make_stack(tmp: Path, name: str, **overrides: Any) -> EmbeddedStack:
    prefix = f"test-{name}-{uuid.uuid4().hex[:8]}:"
    settings = StackSettings(data_dir=tmp, kafka_port=0, vm_port=0, ui_port=0,
                             redis_prefix=prefix, **overrides)
    stack = EmbeddedStack(settings)
    try:
        stack.start_infra()
        stack.start_streams()
        stack.start_ui()
    except BaseException:
        stack.stop()
        raise
    return stack


def drop_keys(stack: EmbeddedStack) -> None:
    client = redis.Redis.from_url(stack.endpoints.redis_url)
    try:
        for key in client.scan_iter(f"{stack.endpoints.redis_prefix}*"):
            client.delete(key)
    finally:
        client.close()


@contextlib.contextmanager
def running_stack(tmp: Path, name: str, **overrides: Any) -> Iterator[EmbeddedStack]:
    """A started stack, stopped and its Redis keys removed afterwards."""
    stack = make_stack(tmp, name, **overrides)
    try:
        yield stack
    finally:
        stack.stop()
        drop_keys(stack)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    with running_stack(tmp_path_factory.mktemp("stack"), "session") as stack:
        yield stack


@pytest.fixture
async def api(stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.endpoints.ui_url, timeout=10) as client:
        yield client


def sim_servers(count: int) -> list[SimulatedServer]:
    """Steady simulated servers with ids no other test uses."""
    base = random.randrange(1000, 9000) * 10
    return [SimulatedServer(base + i, profile="steady", seed=i) for i in range(count)]


FleetFactory = Callable[[list[Any]], Awaitable[Agent]]


@pytest.fixture
async def fleet(stack: EmbeddedStack) -> AsyncIterator[FleetFactory]:
    """Start in-process agents publishing the given sources; stopped after the test."""
    tasks: list[asyncio.Task[None]] = []

    async def start(sources: list[Any]) -> Agent:
        settings = AgentSettings(kafka=KafkaSettings(bootstrap_servers=stack.endpoints.kafka,
                                                     request_timeout_ms=3000))
        agent = Agent(settings, sources)
        tasks.append(asyncio.create_task(agent.run()))
        return agent

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0,
                     interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        pytest.fail(f"condition not met within {timeout}s (last value: {last!r})")
