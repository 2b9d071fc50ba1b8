"""The I/O around :class:`~streams.alerts.logic.AlertEngine` in the live worker.

- rules and silences come from the SQL store; they are read again whenever the UI bumps
  the version key in Redis (checked once a second), so a change applies without a restart;
- alert records are mirrored, per server, into a Faust table (changelog-backed: a
  restarted worker continues every alert where it was, with the same sequence numbers);
- events go to Redis first (the alert panel), then to ``fd.alerts`` (SQL history and
  notifications, written by the store worker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping

import orjson

from connectors.redis_live import LiveEvent, LiveStreamError, LiveStreams
from connectors.sql import SQLError, SQLStore
from schemas import MetricSample
from schemas.alerts import AlertAction, AlertEvent, AlertState
from streams.alerts.logic import AlertEngine
from streams.health.logic import HealthTracker

log = logging.getLogger(__name__)

Emit = Callable[[str, bytes], Awaitable[None]]


class Alerting:
    def __init__(self, engine: AlertEngine, sql: SQLStore, live: LiveStreams,
                 table: MutableMapping[bytes, bytes], emit: Emit, *,
                 ready: Callable[[], bool] = lambda: True, stream_maxlen: int = 50_000,
                 reload_every_s: float = 30.0) -> None:
        self.engine = engine
        self.sql = sql
        self.live = live
        self.table = table
        self._emit = emit
        self._ready = ready  # the table has been recovered from its changelog
        self.stream_maxlen = stream_maxlen
        self.reload_every_s = reload_every_s
        self._version: str | None = None
        self._loaded_at = 0.0
        self._restored = False
        self._flushing = asyncio.Lock()  # batch and timer must not interleave their events
        self.pending: list[AlertEvent] = []

    # per batch ------------------------------------------------------------------------
    async def restore(self) -> int:
        """Load every server's records from the table (once, after its recovery), then
        take back from the SQL store the active alerts the table does not have (the
        embedded broker comes back empty after a restart; the database keeps them)."""
        if self._restored or not self._ready():
            return 0
        self._restored = True
        count = self._restore_table()
        try:
            stored = await self.sql.list_alerts(
                states=[AlertState.PENDING, AlertState.FIRING, AlertState.ACKNOWLEDGED],
                limit=100_000)
        except SQLError as exc:
            log.error("cannot read active alerts from the SQL store: %s", exc)
            return count
        adopted = sum(self.engine.adopt(event) for event in stored)
        if adopted:
            log.info("took back %d active alerts from the SQL store", adopted)
        return count + adopted

    def _restore_table(self) -> int:
        count = 0
        for key, raw in list(self.table.items()):
            server_id = key.decode(errors="replace")
            try:
                state = orjson.loads(raw)
                if isinstance(state, list):  # the first format: records only
                    state = {"records": state}
                self.engine.load(server_id, state)
                count += 1
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.error("ignoring unreadable alert state of %s: %r", server_id, exc)
        if count:
            log.info("restored the alert state of %d servers", count)
        return count

    @property
    def restored(self) -> bool:
        return self._restored

    def observe(self, sample: MetricSample) -> None:
        self.pending.extend(self.engine.observe(sample))

    def act(self, raw: bytes | None) -> None:
        try:
            action = AlertAction.model_validate_json(raw or b"")
        except ValueError as exc:
            log.warning("ignoring an invalid alert action: %s", str(exc)[:300])
            return
        events, refused = self.engine.act(action, time.time())
        if refused:
            log.info("alert action %s on %s refused: %s", action.action, action.alert_id,
                     refused)
        self.pending.extend(events)

    async def flush(self) -> None:
        """Save changed records, then publish the batch's events (Redis, then Kafka)."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        for server_id in self.engine.dirty:
            self.table[server_id.encode()] = orjson.dumps(self.engine.dump(server_id))
        self.engine.dirty.clear()
        events, self.pending = self.pending, []
        if not events:
            return
        keys = self.live.keys
        try:
            await self.live.publish(
                [LiveEvent(keys.alerts_stream, "alert", e.model_dump_json(), self.stream_maxlen)
                 for e in events],
                alerts={e.alert_id: e.model_dump_json() for e in events})
        except LiveStreamError as exc:  # the panel misses these; history and notify go on
            log.error("alert fan-out to Redis failed: %s", exc)
        for event in events:
            try:
                await self._emit(event.server_id, event.model_dump_json().encode())
            except Exception as exc:  # logged; Redis has it, SQL history will miss it
                log.error("cannot publish an alert event to Kafka: %r", exc)

    # once a second --------------------------------------------------------------------
    async def tick(self, tracker: HealthTracker) -> None:
        now = time.time()
        await self.reload(now)
        await self.restore()
        if not self._restored:  # no sweeping before the records are back
            return
        # when each server was last heard of, on this worker's clock (agents' clocks may be
        # off; silence is measured here, like STALE and OFFLINE)
        mono = time.monotonic()
        last_seen = {sid: (now - (mono - s.seen_at), s.tenant, s.hostname)
                     for sid, s in tracker.servers.items()}
        self.pending.extend(self.engine.sweep(now, last_seen))
        await self.flush()

    async def reload(self, now: float, *, force: bool = False) -> bool:
        """Read rules and silences again if the UI changed them (or every 30 s)."""
        try:
            version = await self.live.get(self.live.keys.rules_version)
        except LiveStreamError as exc:
            log.warning("cannot check the alert rules version: %s", exc)
            version = self._version
        if not force and version == self._version and now - self._loaded_at < self.reload_every_s:
            return False
        try:
            rules = await self.sql.list_rules()
            silences = await self.sql.list_silences()
        except SQLError as exc:
            log.error("cannot load alert rules: %s; keeping the current ones", exc)
            return False
        self.pending.extend(self.engine.set_rules(rules, now))
        self.pending.extend(self.engine.set_silences(silences, now))
        if version != self._version:
            log.info("alert rules loaded: %d rules, %d silences (version %s)",
                     len(self.engine.rules), len(silences), version)
        self._version, self._loaded_at = version, now
        return True

