"""Redis live fan-out: per-server and fleet streams, the server summary hash, counters.

Stream entries have two fields: ``event`` (``sample`` or ``health``) and ``data`` (JSON).
A stream entry id doubles as the SSE event id, so ``Last-Event-ID`` resumes exactly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from connectors.errors import ConnectorError
from schemas.topics import RedisKeys

log = logging.getLogger(__name__)
T = TypeVar("T")

STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


class LiveStreamError(ConnectorError):
    """Redis could not be reached or refused a command."""


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field("fd:", pattern=r"^[A-Za-z0-9:_.-]{1,64}$", description="Key prefix")
    fleet_maxlen: int = Field(100_000, ge=100, description="Entries kept in the fleet stream")
    server_maxlen: int = Field(900, ge=10, description="Entries kept per server stream "
                               "(15 min at 1 Hz; history comes from VictoriaMetrics)")
    socket_timeout_s: float = Field(30.0, gt=0, description="Longer than any blocking read")
    max_readers: int = Field(200, ge=1, description="Connections for blocking stream reads "
                             "(one per SSE client), kept apart from the API's pool")


@dataclass(frozen=True)
class LiveEvent:
    """One entry to add: ``event`` name and JSON ``data`` for a stream key."""

    key: str
    event: str
    data: str
    maxlen: int


@dataclass(frozen=True)
class StreamEntry:
    id: str
    event: str
    data: str


class LiveStreams:
    """Async client of FleetDeck's live keys in Redis."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.keys = RedisKeys(settings.prefix)
        commands = aioredis.BlockingConnectionPool.from_url(  # waits for a free connection
            settings.url, decode_responses=True, max_connections=100, timeout=5,
            health_check_interval=30, socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=5)
        self._redis: Any = aioredis.Redis(connection_pool=commands)
        # Blocking reads (SSE) hold a connection each: their own bounded pool, so many
        # clients cannot starve the API's short commands.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.url, decode_responses=True, max_connections=settings.max_readers,
            timeout=5, socket_timeout=settings.socket_timeout_s, socket_connect_timeout=5)
        self._readers: Any = aioredis.Redis(connection_pool=pool)

    async def close(self) -> None:
        await self._redis.aclose()
        await self._readers.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def _call(self, what: str, command: Awaitable[T]) -> T:
        """Await a Redis command, translating library errors to LiveStreamError."""
        try:
            return await command
        except (RedisError, OSError) as exc:
            raise LiveStreamError(f"redis {what} failed: {exc!r}") from exc

    async def publish(self, events: Iterable[LiveEvent],
                      summaries: Mapping[str, str] | None = None,
                      alerts: Mapping[str, str] | None = None) -> None:
        """Add ``events`` and update server ``summaries`` and current ``alerts`` in one
        round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for ev in events:
            pipe.xadd(ev.key, {"event": ev.event, "data": ev.data}, maxlen=ev.maxlen,
                      approximate=True)
        if summaries:
            pipe.hset(self.keys.servers, mapping=dict(summaries))
        if alerts:
            pipe.hset(self.keys.alerts, mapping=dict(alerts))
        await self._call("publish", pipe.execute())

    async def hget(self, key: str, field: str) -> str | None:
        found = await self._call("read", self._redis.hget(key, field))
        return None if found is None else str(found)

    async def get(self, key: str) -> str | None:
        found = await self._call("read", self._redis.get(key))
        return None if found is None else str(found)

    async def bump(self, key: str) -> int:
        """Raise a version counter (workers watch it to reload their configuration)."""
        return int(await self._call("counter", self._redis.incr(key)))

    async def read(self, key: str, after: str, *, block_ms: int = 15_000,
                   count: int = 500) -> list[StreamEntry]:
        """Entries of ``key`` after id ``after`` (``$`` = only new ones), waiting up to block_ms."""
        reply = await self._call("read", self._readers.xread({key: after}, block=block_ms,
                                                             count=count))
        return [_entry(entry_id, fields)
                for _key, items in reply or () for entry_id, fields in items]

    async def last_id(self, key: str) -> str:
        """Id of the newest entry of ``key`` ("0-0" when empty)."""
        newest = await self.tail(key, 1)
        return newest[0].id if newest else "0-0"

    async def tail(self, key: str, count: int) -> list[StreamEntry]:
        """The newest ``count`` entries of ``key``, newest first."""
        items = await self._call("read", self._redis.xrevrange(key, count=count))
        return [_entry(entry_id, fields) for entry_id, fields in items]

    async def summaries(self) -> dict[str, str]:
        return dict(await self._call("read", self._redis.hgetall(self.keys.servers)))

    async def summary(self, server_id: str) -> str | None:
        found = await self._call("read", self._redis.hget(self.keys.servers, server_id))
        return None if found is None else str(found)

    async def incr(self, counter: str, amount: int = 1) -> None:
        await self._call("counter", self._redis.hincrby(self.keys.counters, counter, amount))

    async def counters(self) -> dict[str, int]:
        raw = await self._call("read", self._redis.hgetall(self.keys.counters))
        return {k: int(v) for k, v in raw.items()}


def _entry(entry_id: str, fields: dict[str, str]) -> StreamEntry:
    return StreamEntry(entry_id, fields.get("event", "message"), fields.get("data", "{}"))
