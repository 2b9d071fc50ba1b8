"""A bounded, ordered buffer of messages waiting to be published.

While the broker is unreachable samples pile up here and are replayed in order on
reconnect. When full, the oldest message is dropped and counted (never silently).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    key: bytes
    value: bytes


class Spool:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("spool capacity must be at least 1")
        self.capacity = capacity
        self._items: deque[tuple[int, Message]] = deque()
        self._next = 0  # sequence number of the next message appended
        self._ready = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def append(self, message: Message) -> None:
        if len(self._items) >= self.capacity:
            self._items.popleft()
            self.dropped += 1
        self._items.append((self._next, message))
        self._next += 1
        self._ready.set()

    def peek(self, limit: int, after: int = -1) -> tuple[int, list[Message]]:
        """The oldest ``limit`` messages with a sequence number above ``after``, left in
        place until :meth:`commit`, and the sequence number to commit once they are
        delivered (``after`` itself when there are none)."""
        start = max(0, after - self._items[0][0] + 1) if self._items else 0
        stop = min(len(self._items), start + limit)
        head = [self._items[i] for i in range(start, stop)]
        return (head[-1][0] if head else after), [m for _, m in head]

    def has_after(self, after: int) -> bool:
        """Whether a message newer than sequence number ``after`` is waiting."""
        return bool(self._items) and self._items[-1][0] > after

    def commit(self, through: int) -> None:
        """Forget the messages up to sequence number ``through`` (they were delivered).

        Messages dropped for space while a delivery was in flight are already gone, so
        newer, unsent messages are never taken for delivered ones."""
        while self._items and self._items[0][0] <= through:
            self._items.popleft()
        if not self._items:
            self._ready.clear()

    async def wait(self, after: int = -1) -> None:
        """Until a message newer than sequence number ``after`` is waiting."""
        while not self.has_after(after):
            self._ready.clear()
            await self._ready.wait()
