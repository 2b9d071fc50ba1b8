"""Everything done with one batch of metric messages, decoded once.

Dead letters → ``fd.dead-letter``; valid samples → health, Redis live streams,
VictoriaMetrics (raw lines and 1-minute rollups). The Faust agent only feeds batches in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import orjson

from connectors.redis_live import LiveEvent, LiveStreamError, LiveStreams
from schemas import DeadLetter, HealthChange, HealthState, MetricSample
from schemas.topics import METRICS
from streams.alerts.worker import Alerting
from streams.health.logic import HealthTracker, ServerHealth
from streams.ingest.logic import decode_sample
from streams.live import logic as live
from streams.settings import StreamsSettings
from streams.store.logic import Rollups, to_lines
from streams.store.writer import VMWriter

log = logging.getLogger(__name__)

Emit = Callable[[str, bytes], Awaitable[None]]  # (key, value) -> produce to a topic


class Pipeline:
    def __init__(self, settings: StreamsSettings, live_streams: LiveStreams, writer: VMWriter,
                 dead_letter: Emit, health_out: Emit, alerting: Alerting | None = None) -> None:
        self.settings = settings
        self.live = live_streams
        self.writer = writer
        self._dead_letter = dead_letter
        self._health_out = health_out
        self.tracker = HealthTracker(settings.health)
        self.rollups = Rollups()
        self.briefs: dict[str, dict[str, object]] = {}
        self.alerting = alerting

    async def handle(self, batch: list[bytes | None],
                     actions: list[bytes | None] | None = None) -> None:
        """One batch of ``fd.metrics`` messages (and of ``fd.alert-actions``, which share
        its partitions)."""
        if not self.settings.does_live:
            await self._store([s for s in map(self._decode, batch)
                               if isinstance(s, MetricSample)])
            return
        now = time.monotonic()
        events: list[LiveEvent] = []
        changes: list[HealthChange] = []
        samples: list[MetricSample] = []
        touched: set[str] = set()
        alerting = self.alerting
        if alerting is not None:
            await alerting.restore()
            if not alerting.restored:  # Faust delivers after recovery; this is a safeguard
                alerting = None
            else:
                for raw in actions or ():
                    alerting.act(raw)
        for raw in batch:
            item = self._decode(raw)
            if isinstance(item, DeadLetter):
                await self._reject(item)
                continue
            change = self.tracker.observe(item, now)
            if change is not None:
                changes.append(change)
            server = self.tracker.servers[item.server_id]
            samples.append(item)
            if alerting is not None:
                alerting.observe(item)
            if item.ts < server.last_seen:  # replayed after newer ones: not the latest
                events.append(live.late_sample_event(item, server.state.value, self.live.keys,
                                                     self.settings.redis))
                continue
            brief = live.summary(item, server.state, server.reasons)
            self.briefs[item.server_id] = brief
            touched.add(item.server_id)
            events.extend(live.sample_events(item, brief, self.live.keys, self.settings.redis))
        await self._publish(events, changes, touched)  # the live view first: it is waited on
        if alerting is not None:
            await alerting.flush()
        if self.settings.does_store:
            await self._store(samples)

    async def _store(self, samples: list[MetricSample]) -> None:
        lines: list[str] = []
        for item in samples:
            lines.extend(to_lines(item))
            self.rollups.add(item)
        await self._write(lines)

    async def _write(self, lines: list[str]) -> None:
        """A store-only worker writes before Faust acks the batch, so a committed offset
        means the samples are in VictoriaMetrics; the combined worker queues them instead,
        so the live path never waits on storage."""
        if self.settings.does_live:
            await self.writer.put(lines)
        else:
            await self.writer.write(lines)

    def _decode(self, raw: bytes | None) -> MetricSample | DeadLetter:
        return decode_sample(raw, topic=METRICS.name, key=None,
                             max_bytes=self.settings.kafka.max_message_bytes)

    async def _reject(self, letter: DeadLetter) -> None:
        log.warning("dead-lettered a message: %s (%s)", letter.reason, letter.detail[:200])
        try:
            await self._dead_letter(letter.key or "", letter.model_dump_json().encode())
            await self.live.incr("dead_letters")
            await self.live.incr(f"dead_letters:{letter.reason}")
        except Exception as exc:  # the letter is logged above; the batch goes on
            log.error("cannot record a dead letter: %r", exc)

    async def _publish(self, events: list[LiveEvent], changes: list[HealthChange],
                       touched: set[str]) -> None:
        for change in changes:
            events.extend(live.health_events(change, self.live.keys, self.settings.redis))
            try:
                await self._health_out(change.server_id, change.model_dump_json().encode())
            except Exception as exc:  # Redis still gets it; the topic misses this change
                log.error("cannot publish a health change to Kafka: %r", exc)
        touched = touched | {c.server_id for c in changes}
        summaries = {sid: orjson.dumps(self.briefs[sid]).decode()
                     for sid in touched if sid in self.briefs}
        if not events:
            return
        try:
            await self.live.publish(events, summaries)
        except LiveStreamError as exc:  # the live view misses this batch; storage goes on
            log.error("live fan-out failed: %s", exc)

    async def tick(self) -> None:
        """Once a second: STALE/OFFLINE detection and closed rollup minutes.

        An error here is logged and the next tick tries again: Faust would otherwise
        crash the whole worker over a failed timer."""
        try:
            await self._tick()
        except Exception:
            log.exception("periodic health/rollup work failed; retrying next second")

    async def _tick(self) -> None:
        if self.settings.does_store:
            await self._write(self.rollups.flush(time.time()))
        if not self.settings.does_live:
            return
        changes = self.tracker.sweep(time.monotonic())
        for change in changes:
            brief = self.briefs.get(change.server_id)
            if brief is not None:
                self.briefs[change.server_id] = live.apply_health(brief, change)
        if changes:
            await self._publish([], changes, set())
        if self.alerting is not None:
            await self.alerting.tick(self.tracker)

    async def restore(self) -> int:
        """Seed health from the summaries in Redis, so silent servers go OFFLINE after a restart."""
        if not self.settings.does_live:
            return 0
        try:
            stored = await self.live.summaries()
        except LiveStreamError as exc:
            log.warning("cannot restore server health: %s", exc)
            return 0
        mono, wall = time.monotonic(), time.time()
        for server_id, raw in stored.items():
            try:
                brief = orjson.loads(raw)
                last_seen = datetime.fromisoformat(brief["last_seen"])
                state = HealthState(brief["health"])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring a bad stored summary for %s: %s", server_id, exc)
                continue
            self.briefs[server_id] = brief
            self.tracker.restore(ServerHealth(
                server_id, brief.get("tenant", "default"), brief.get("hostname", ""), state,
                list(brief.get("reasons", [])), last_seen,
                mono - (wall - last_seen.timestamp())))
        return len(stored)

