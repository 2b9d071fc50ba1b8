"""The Faust application: topics, the ingest agent and the once-a-second timer.

Agents stay thin: they feed batches to :class:`streams.ingest.pipeline.Pipeline`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust
import mode

from connectors.redis_live import LiveStreams
from connectors.sql import SQLError, SQLStore
from connectors.victoriametrics import VMClient
from schemas.topics import (
    ALERT_ACTIONS,
    ALERTS,
    AUDIT,
    COMMAND_EVENTS,
    DEAD_LETTER,
    HEALTH,
    METRICS,
    Topic,
)
from streams import resets
from streams.alerts.logic import AlertEngine
from streams.alerts.sink import AlertSink
from streams.alerts.worker import Alerting
from streams.audit.worker import AuditSink
from streams.commands.worker import CommandTracker
from streams.ingest.logic import dead_letter
from streams.ingest.pipeline import Pipeline
from streams.settings import StreamsSettings
from streams.store.writer import VMWriter
from streams.transport import transport_for

log = logging.getLogger(__name__)
T = TypeVar("T")


def _topic(app: faust.App, topic: Topic) -> Any:
    return app.topic(topic.name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=topic.partitions)


def create_app(settings: StreamsSettings) -> faust.App:
    app = faust.App(
        settings.group_id,
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        store="memory://",
        datadir=settings.data_dir,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        topic_disable_leader=True,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=1,
        stream_buffer_maxsize=8192,
        broker_commit_interval=1.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        # a member that left without saying so (a worker rebuilt after a broker reset) holds
        # up the next join until this runs out
        broker_rebalance_timeout=8.0,
    )
    # Only the store role is never waited on; the control role's fetch wait is part of
    # every command's dispatch-to-ACK time, so it gets the short wait of the live role.
    app.transport = transport_for(app, settings.store_fetch_max_wait_ms
                                  if settings.role == "store" else settings.fetch_max_wait_ms)
    metrics, dead, health = _topic(app, METRICS), _topic(app, DEAD_LETTER), _topic(app, HEALTH)
    live = LiveStreams(settings.redis)
    vm = VMClient(settings.vm)
    writer = VMWriter(vm, settings.vm, count=live.incr)

    async def to_dead(key: str, value: bytes) -> None:
        await dead.send(key=key.encode() or None, value=value)

    async def to_health(key: str, value: bytes) -> None:
        await health.send(key=key.encode(), value=value)

    sql = SQLStore(settings.sql)
    alerting = None
    if settings.does_live:
        alerts_topic = _topic(app, ALERTS)
        # Alert records per server: key = server id, partitioned like fd.metrics (same key,
        # same partition count, the producer's partitioner), so each lives with its samples.
        state = app.Table("alert-state", partitions=METRICS.partitions, use_partitioner=True,
                          key_type=bytes, value_type=bytes)  # bytes: raw (de)serialisation

        async def to_alerts(key: str, value: bytes) -> None:
            await alerts_topic.send(key=key.encode(), value=value)

        def recovered() -> bool:  # Faust has replayed the table's changelog
            recovery: Any = getattr(app.tables, "recovery", None)
            return recovery is not None and bool(recovery.completed.is_set())

        alerting = Alerting(AlertEngine(settings.alerts), sql, live, state, to_alerts,
                            ready=recovered)
    pipeline = Pipeline(settings, live, writer, to_dead, to_health, alerting)

    within = settings.batch_within_s if settings.does_live else settings.store_batch_within_s
    # fd.alert-actions is co-partitioned with fd.metrics: one agent reading both sees a
    # server's acknowledgements in the worker that owns its alert state.
    source = app.topic(METRICS.name, ALERT_ACTIONS.name, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw") if settings.does_live \
        else metrics

    if settings.does_metrics:
        @app.agent(source, name="fleetdeck.ingest")
        async def ingest(stream: Any) -> None:
            async for events in stream.take_events(settings.batch_max, within=within):
                samples = [e.value for e in events if e.message.topic == METRICS.name]
                actions = [e.value for e in events if e.message.topic != METRICS.name]
                await pipeline.handle(samples, actions)

    if settings.does_control:
        _control_agents(app, sql, live, dead)

    if settings.does_store:
        sink = AlertSink(sql, settings.webhook)

        @app.agent(_topic(app, ALERTS), name="fleetdeck.alert-sink")
        async def alert_sink(stream: Any) -> None:
            async for batch in stream.take(500, within=0.2):
                while True:  # not acknowledged before it is stored: retry until it is
                    try:
                        skipped = await sink.record(batch)
                        break
                    except SQLError as exc:  # unreachable: try the same batch again
                        log.error("cannot store alert events, retrying: %s", exc)
                        await asyncio.sleep(2.0)
                if skipped:
                    await live.incr("alert_events_skipped", skipped)

        @app.task
        async def notify_forever() -> None:
            await sink.run()

    @app.service
    class Shutdown(mode.Service):
        """On stop: write what is still buffered, then close the clients."""

        async def on_stop(self) -> None:
            if settings.does_store:
                await writer.flush(timeout=10)
            await vm.close()
            await live.close()
            await sql.close()

    @app.task
    async def start() -> None:
        try:
            await sql.migrate()
        except SQLError as exc:  # rules load on a later tick once the database is back
            log.error("cannot prepare the SQL store: %s", exc)
        if alerting is not None:
            await alerting.reload(time.time(), force=True)
        restored = await pipeline.restore() if settings.does_metrics else 0
        log.info("streams worker started (role %s); restored %d servers", settings.role,
                 restored)

    if settings.does_store:
        @app.task
        async def write_forever() -> None:
            await writer.run()

    @app.task
    async def watch_for_log_resets() -> None:
        await resets.ResetWatch(app).run()

    if settings.does_metrics:
        @app.timer(1.0)
        async def tick() -> None:
            await pipeline.tick()

    return app


def _control_agents(app: faust.App, sql: SQLStore, live: LiveStreams, dead: Any) -> None:
    """Command tracking and the audit log (the control role)."""
    audit_topic = _topic(app, AUDIT)

    async def append_audit(key: str, value: bytes) -> None:
        await audit_topic.send(key=key.encode(), value=value)

    tracker = CommandTracker(sql, live, append_audit)
    audit = AuditSink(sql)

    @app.agent(_topic(app, COMMAND_EVENTS), name="fleetdeck.command-events")
    async def command_events(stream: Any) -> None:
        async for batch in stream.take(200, within=0.002):
            bad = await _until_stored("command events", tracker.handle, batch)
            if bad:
                await live.incr("command_events_invalid", bad)

    @app.agent(audit_topic, name="fleetdeck.audit")
    async def audit_events(stream: Any) -> None:
        async for batch in stream.take(500, within=0.05):
            _appended, bad = await _until_stored("audit events", audit.record, batch)
            for raw in bad:
                letter = dead_letter(raw, AUDIT.name, None, "invalid", "not a valid audit event")
                await dead.send(value=letter.model_dump_json().encode())
            if bad:
                await live.incr("audit_events_invalid", len(bad))

    @app.timer(1.0)
    async def sweep_commands() -> None:
        try:
            await tracker.sweep()
        except SQLError as exc:
            log.warning("command sweep skipped: %s", exc)


async def _until_stored(what: str, store: Callable[[Any], Awaitable[T]], batch: Any) -> T:
    """``store(batch)``, again and again while the database cannot be reached: a batch is not
    acknowledged before it is stored."""
    while True:
        try:
            return await store(batch)
        except SQLError as exc:
            log.error("cannot store %s, retrying: %s", what, exc)
            await asyncio.sleep(2.0)


class _Worker(faust.Worker):
    """faust.Worker that remembers whether a signal asked it to stop (then it is never
    built again, whatever its exit code)."""

    signalled = False

    def _on_sigint(self) -> None:
        _Worker.signalled = True
        super()._on_sigint()

    def _on_sigterm(self) -> None:
        _Worker.signalled = True
        super()._on_sigterm()


def run(settings: StreamsSettings, loglevel: str = "info", restart_delay_s: float = 2.0) -> None:
    """Run the worker until interrupted (a signal ends it normally).

    When the Faust app crashes instead (on purpose when the broker came back with empty logs,
    see :mod:`streams.resets`; or, seen once, an internal assertion in aiokafka's group
    coordinator as such a broker returns), it is built again in a fresh event loop of the
    same process, so the live view resumes by itself. mode's worker ends every run with
    ``SystemExit``: code 0 for a stop, 1 after a crash.
    """
    while True:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        worker = _Worker(create_app(settings), loglevel=loglevel, override_logging=False)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code in (None, 0) or _Worker.signalled:
                raise
            log.error("stream worker crashed (exit %s); building it again in %.1f s",
                      exc.code, restart_delay_s)
        except Exception:
            if _Worker.signalled:
                raise
            log.exception("stream worker crashed; building it again in %.1f s",
                          restart_delay_s)
        del worker
        if not loop.is_closed() and not loop.is_running():
            loop.close()  # its selector and sockets: a worker that resets often must not leak
        time.sleep(restart_delay_s)
