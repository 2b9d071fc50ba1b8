"""Recovery from a broker that came back with empty logs.

Apache Kafka keeps its logs across restarts; the embedded Tansu broker keeps topics in
memory, so after a restart every partition starts again at offset 0. The Faust consumer
would then sit at its old position (or commit it again) and skip, or drop as
"already seen", every sample that agents replay from their spools.

:class:`ResetDetector` (plain logic) notices that a partition's end offset went below the
highest end offset seen before, and :class:`ResetWatch` that the group's committed offsets
vanished. The worker then crashes its Faust app on purpose with :class:`BrokerWasReset`, and
``streams.app.run`` builds a new one in the same process: a fresh consumer has no read
position, finds no committed offset and reads the new logs from offset 0. (Rewinding the
running consumer instead raced with Faust: a batch still in its callback when the broker
came back set the partition's read offset high again after the rewind, and Faust then
dropped the replayed messages below it as already read.) Re-processing is safe: the sinks
are idempotent (same series and timestamp in VictoriaMetrics; health keyed by sample time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class ResetDetector:
    high: dict[Hashable, int] = field(default_factory=dict)

    def observe(self, ends: Mapping[Hashable, int]) -> set[Hashable]:
        """Partitions whose log end went backwards since the last observation."""
        reset = {tp for tp, end in ends.items() if end < self.high.get(tp, 0)}
        for tp, end in ends.items():
            self.high[tp] = end
        return reset


class BrokerWasReset(Exception):
    """The broker came back without the logs this worker was reading (crashes the app on
    purpose, so that it is built again from scratch)."""


class ResetWatch:
    """Faust glue: holds commits while the broker is away, then checks what it kept.

    While end offsets cannot be read, commits are held back (a stale in-memory offset
    committed to a fresh broker would make the group skip the replayed samples). When
    the broker answers again and partitions' committed offsets vanished, or their log end
    went backwards, the app is crashed with :class:`BrokerWasReset` to be built again.
    """

    def __init__(self, app: Any, interval: float = 0.5, stuck_after_s: float = 20.0) -> None:
        self.app = app
        self.interval = interval
        self.stuck_after_s = stuck_after_s
        self.detector = ResetDetector()
        self.suspect = False
        self.suspect_since = 0.0

    def install(self) -> None:
        consumer = self.app.consumer
        commit = consumer._commit

        async def guarded(offsets: Any) -> bool:
            return False if self.suspect else bool(await commit(offsets))

        consumer._commit = guarded

    async def run(self) -> None:
        self.install()
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:  # broker away: hold commits and try again
                now = time.monotonic()
                if not self.suspect:
                    log.warning("broker unreachable (%r); holding offset commits", exc)
                    self.suspect, self.suspect_since = True, now
                elif stuck(self.suspect_since, now, self.stuck_after_s) and \
                        await self._broker_answers():
                    # the broker is back but this consumer cannot read its positions (a
                    # group that never rejoined, say): nothing would arrive until rebuilt
                    log.warning("the broker answers but this worker has not read from it "
                                "for %.0f s (%r); building the worker again",
                                now - self.suspect_since, exc)
                    await self.app.crash(BrokerWasReset(f"stuck after the broker came "
                                                        f"back: {exc!r}"))
                    return

    async def check(self) -> None:
        consumer = self.app.consumer
        tps = sorted(consumer.assignment())
        if not tps:
            if self.suspect:  # not back yet: the group has not given this worker partitions
                raise NotAssigned("no partitions assigned since the broker went away")
            return
        async with asyncio.timeout(5):
            ends = await consumer.highwaters(*tps)
            lost = await self._lost_commits(tps) if self.suspect else set()
        reset = sorted(map(str, self.detector.observe(ends) | lost))
        if reset:
            log.warning("the broker came back without its logs (%s); building the worker "
                        "again to read them from offset 0", ", ".join(reset))
            await self.app.crash(BrokerWasReset(f"logs reset: {reset}"))
            return
        if self.suspect:
            log.info("broker back; offset commits resume")
        self.suspect = False

    async def _lost_commits(self, tps: list[Any]) -> set[Any]:
        consumer = self.app.consumer
        thread = consumer._thread
        client = thread._ensure_consumer()
        lost = set()
        for tp in tps:
            if consumer._committed_offset.get(tp) is None:
                continue
            committed = await thread.call_thread(client.committed, _aiokafka_tp(tp))
            if committed is None:
                lost.add(tp)
        return lost


    async def _broker_answers(self) -> bool:
        """Whether a bootstrap server accepts a connection (the broker process is up)."""
        for url in self.app.conf.broker:
            try:
                async with asyncio.timeout(2):
                    _reader, writer = await asyncio.open_connection(url.host,
                                                                      url.port or 9092)
            except (OSError, TimeoutError):
                continue
            writer.close()
            return True
        return False


class NotAssigned(Exception):
    """The consumer group has not assigned this worker any partition (yet)."""


def stuck(since: float, now: float, after_s: float) -> bool:
    """Whether a suspicion that started at ``since`` has lasted ``after_s`` by ``now``."""
    return now - since >= after_s


def _aiokafka_tp(tp: Any) -> Any:
    from aiokafka.structs import TopicPartition

    return TopicPartition(tp.topic, tp.partition)
