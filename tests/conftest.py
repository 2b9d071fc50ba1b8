"""Shared fixtures: the real embedded stack (Tansu, VictoriaMetrics, Redis, worker, UI).

One stack per test session, each with its own Redis key prefix and data directory.
Tests run simulated agents in-process so they can steer them (force critical, silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from agent.runner import Agent
from agent.settings import AgentSettings
from agent.simulate import SimulatedServer
from connectors.kafka import KafkaSettings
from connectors.sql import SQLSettings, SQLStore
from fleetdeck.settings import StackSettings
from fleetdeck.stack import EmbeddedStack
from schemas.identity import Role


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


@dataclass(frozen=True)
class Admin:
    """An admin of tenant "default": a user to sign in as, and an API token."""

    username: str
    password: str
    token: str


def bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


async def make_admin(sql_url: str) -> Admin:
    from ui.auth import hash_password, new_token

    sql = SQLStore(SQLSettings(url=sql_url))
    try:
        await sql.migrate()
        username, password = f"admin-{uuid.uuid4().hex[:6]}", secrets.token_urlsafe(12)
        await sql.create_tenant("default", "Default")
        await sql.create_user(username, hash_password(password))
        await sql.set_membership(username, "default", str(Role.ADMIN))
        text, token = new_token("default", Role.ADMIN, username, "tests", timedelta(hours=6))
        await sql.create_token(token)
    finally:
        await sql.close()
    return Admin(username, password, text)


@pytest.fixture(scope="session")
async def admin(stack: EmbeddedStack) -> Admin:
    return await make_admin(stack.endpoints.sql_url)


@pytest.fixture
async def api(stack: EmbeddedStack, admin: Admin) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the stack's API, acting as an admin of tenant "default"."""
    async with httpx.AsyncClient(base_url=stack.endpoints.ui_url, timeout=10,
                                 headers=bearer(admin.token)) as client:
        yield client


Tokens = Callable[..., Awaitable[str]]


@pytest.fixture
async def sql(stack: EmbeddedStack) -> AsyncIterator[SQLStore]:
    """The stack's SQL store."""
    store = SQLStore(SQLSettings(url=stack.endpoints.sql_url))
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
def token(sql: SQLStore) -> Tokens:
    """Makes API tokens: ``await token(tenant, role, name)`` (the tenant is created)."""
    from ui.auth import new_token

    async def make(tenant: str, role: Role, name: str) -> str:
        text, record = new_token(tenant, role, name, "test", timedelta(hours=1))
        await sql.create_tenant(tenant, tenant)
        await sql.create_token(record)
        return text

    return make


@pytest.fixture
async def anon(stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the stack's API that is not signed in."""
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
                     interval: float = 0.25, describe: Callable[[], Any] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds
    (with what ``describe()`` says of the state then, when given)."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        state = f"; {describe()!r}" if describe is not None else ""
        pytest.fail(f"condition not met within {timeout}s (last value: {last!r}{state})")
