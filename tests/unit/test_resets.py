"""Noticing a broker that came back empty, or a worker stuck after it came back."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from streams.resets import BrokerWasReset, ResetDetector, ResetWatch, stuck


def test_a_log_end_that_goes_back_is_a_reset() -> None:
    detector = ResetDetector()
    assert detector.observe({"a": 5, "b": 7}) == set()
    assert detector.observe({"a": 6, "b": 7}) == set()
    assert detector.observe({"a": 0, "b": 9}) == {"a"}
    assert detector.observe({"a": 1}) == set()  # measured from the new log on


def test_stuck_after_the_limit() -> None:
    assert not stuck(100.0, 119.9, 20.0)
    assert stuck(100.0, 120.0, 20.0)


class FakeApp:
    """Just what ResetWatch reads of a Faust app: the consumer, the broker URLs, crash."""

    def __init__(self, port: int) -> None:
        self.consumer = SimpleNamespace(assignment=lambda: set(), _commit=self._commit)
        self.conf = SimpleNamespace(broker=[SimpleNamespace(host="127.0.0.1", port=port)])
        self.crashed: list[BaseException] = []

    async def _commit(self, offsets: Any) -> bool:
        return True

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


async def test_a_worker_left_without_partitions_after_an_outage_is_rebuilt() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        app = FakeApp(port)
        watch = ResetWatch(app, interval=0.01, stuck_after_s=0.2)
        watch.suspect, watch.suspect_since = True, 0.0  # the broker went away earlier
        async with asyncio.timeout(5):
            await watch.run()  # returns once it crashed the app
        assert len(app.crashed) == 1 and isinstance(app.crashed[0], BrokerWasReset)
        assert "no partitions assigned" in str(app.crashed[0])
    finally:
        server.close()
        await server.wait_closed()


async def test_no_rebuild_while_the_broker_is_still_away() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens there now
    app = FakeApp(port)
    watch = ResetWatch(app, interval=0.01, stuck_after_s=0.05)
    watch.suspect, watch.suspect_since = True, 0.0
    task = asyncio.create_task(watch.run())
    await asyncio.sleep(0.3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert app.crashed == [] and watch.suspect
