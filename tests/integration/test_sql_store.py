"""The SQL store on both of its backends: SQLite (a file per test) and a real PostgreSQL.

PostgreSQL must run at 127.0.0.1:5432 with trust auth for ``postgres``; each run of this
module creates a database of its own and drops it afterwards. Without PostgreSQL the
``[postgresql]`` cases fail: both backends are supported, so both are tested.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from connectors.sql import Base, SQLError, SQLSettings, SQLStore
from schemas.alerts import AlertEvent, AlertRule, AlertState, Matcher, Severity, Silence

pytestmark = pytest.mark.integration

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
TABLES = "alert_rules, silences, alerts, alert_events, notifications"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


async def pg_connect(database: str) -> asyncpg.Connection:
    try:
        async with asyncio.timeout(10):
            return await asyncpg.connect(**PG, database=database)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        problem = repr(exc)
    # Outside the except block, so the report is this one line, not a chained traceback.
    pytest.fail(f"PostgreSQL is needed at {PG['host']}:{PG['port']} (user {PG['user']}, "
                f"trust auth) and could not be reached: {problem}", pytrace=False)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def postgres_db(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """For the postgresql cases: a fresh database for this module (None for sqlite)."""
    if request.param == "sqlite":
        yield None
        return
    name = f"fleetdeck_test_{uuid.uuid4().hex[:12]}"
    admin = await pg_connect("postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield name
    admin = await pg_connect("postgres")
    try:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


@pytest.fixture
async def store(postgres_db: str | None, tmp_path: Path) -> AsyncIterator[SQLStore]:
    """A migrated, empty store: a new SQLite file, or the module's PostgreSQL emptied."""
    if postgres_db is None:  # a directory that does not exist yet: the store creates it
        url = f"sqlite+aiosqlite:///{tmp_path}/data/fleetdeck.db"
    else:
        url = f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{postgres_db}"
    sql = SQLStore(SQLSettings(url=url))
    try:
        async with asyncio.timeout(60):
            await sql.migrate()
            if postgres_db is not None:
                conn = await pg_connect(postgres_db)
                try:
                    await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
                finally:
                    await conn.close()
        yield sql
    finally:
        await sql.close()


def rule(rule_id: str, threshold: float = 90, **kw: Any) -> AlertRule:
    return AlertRule.model_validate({"id": rule_id, "expr": f"cpu.total > {threshold} for 2m",
                                     **kw})


def silence(silence_id: str, starts_at: datetime, ends_at: datetime,
            created_at: datetime | None = None) -> Silence:
    return Silence(id=silence_id, matchers=[Matcher(label="server_id", value="srv-1")],
                   starts_at=starts_at, ends_at=ends_at, created_by="ops",
                   comment="maintenance", created_at=created_at or starts_at)


def event(alert: str = "a1", seq: int = 1, *, server: str = "srv-1", rule_id: str = "cpu-high",
          severity: Severity = Severity.WARNING, state: AlertState = AlertState.FIRING,
          ts: datetime | None = None) -> AlertEvent:
    return AlertEvent(server_id=server, rule_id=rule_id, severity=severity, state=state,
                      transition=str(state), alert_id=alert, seq=seq,
                      ts=ts or T0 + timedelta(seconds=seq))


def schema_diff(connection: Connection) -> tuple[str | None, list[Any]]:
    context = MigrationContext.configure(connection)
    return context.get_current_revision(), compare_metadata(context, Base.metadata)


async def test_migrate_twice_is_a_no_op_and_the_schema_matches_the_models(
        store: SQLStore) -> None:
    await store.upsert_rule(rule("kept"))
    await store.migrate()
    await store.migrate()
    assert [r.id for r in await store.list_rules()] == ["kept"]
    engine = create_async_engine(store.settings.url)
    try:
        async with engine.connect() as conn:
            revision, diff = await conn.run_sync(schema_diff)
    finally:
        await engine.dispose()
    assert revision == "0002"  # the newest migration
    assert diff == []


async def test_rules_upsert_replace_get_list_delete(store: SQLStore) -> None:
    assert await store.get_rule("cpu-high") is None
    assert await store.upsert_rule(rule("cpu-high")) is True
    assert await store.upsert_rule(rule("a-first", severity=Severity.CRITICAL)) is True
    assert await store.upsert_rule(rule("cpu-high", 95)) is False

    found = await store.get_rule("cpu-high")
    assert found == rule("cpu-high", 95)
    assert [r.id for r in await store.list_rules()] == ["a-first", "cpu-high"]
    assert (await store.list_rules())[0].severity is Severity.CRITICAL

    assert await store.delete_rule("cpu-high") is True
    assert await store.delete_rule("cpu-high") is False
    assert await store.get_rule("cpu-high") is None
    assert [r.id for r in await store.list_rules()] == ["a-first"]


async def test_silences_add_list_and_expire(store: SQLStore) -> None:
    now = datetime.now(UTC)
    over = silence("over", now - timedelta(hours=2), now - timedelta(hours=1))
    active = silence("active", now - timedelta(minutes=5), now + timedelta(hours=1))
    later = silence("later", now + timedelta(hours=1), now + timedelta(hours=2),
                    created_at=now)
    for item in (over, active, later):
        await store.add_silence(item)
    with pytest.raises(SQLError, match="exists already"):
        await store.add_silence(active)

    assert await store.get_silence("active") == active
    assert await store.get_silence("nope") is None
    assert [s.id for s in await store.list_silences()] == ["later", "active"]  # newest first
    assert [s.id for s in await store.list_silences(include_expired=True)] == [
        "later", "active", "over"]
    past = now - timedelta(hours=1, minutes=30)
    assert {s.id for s in await store.list_silences(at=past)} == {"over", "active", "later"}

    expired = await store.expire_silence("active", now)
    assert expired is not None and expired.ends_at == now and expired.starts_at == active.starts_at
    assert await store.get_silence("active") == expired
    assert [s.id for s in await store.list_silences(at=now)] == ["later"]
    # Expiring again later changes nothing; an unknown id is None.
    assert await store.expire_silence("active", now + timedelta(minutes=1)) == expired
    assert await store.expire_silence("nope", now) is None

    # One that has not started yet ends before it begins, and still validates.
    cancelled = await store.expire_silence("later", now)
    assert cancelled is not None and cancelled.ends_at == now
    assert cancelled.starts_at < now and not cancelled.active(now)
    assert await store.list_silences(at=now) == []


async def test_record_alert_event_is_idempotent(store: SQLStore) -> None:
    first = event("a1", 1)
    assert await store.record_alert_event(first) is True
    assert await store.record_alert_event(first) is False
    # Same (alert_id, seq), other content (a redelivery): still nothing changes.
    assert await store.record_alert_event(event("a1", 1, state=AlertState.RESOLVED)) is False
    assert await store.alert_history("a1") == [first]
    assert await store.get_alert("a1") == first
    assert await store.get_alert("nope") is None

    # Redeliveries racing each other (two workers after a rebalance): exactly one wins.
    racing = event("a2", 1)
    async with asyncio.timeout(30):
        won = await asyncio.gather(*(store.record_alert_event(racing) for _ in range(5)))
    assert sorted(won) == [False] * 4 + [True]
    assert await store.alert_history("a2") == [racing]


async def test_out_of_order_events_keep_the_newest_current(store: SQLStore) -> None:
    newest = event("a1", 3, state=AlertState.RESOLVED)
    older = event("a1", 2, state=AlertState.FIRING)
    assert await store.record_alert_event(newest) is True
    assert await store.record_alert_event(older) is True
    assert await store.get_alert("a1") == newest
    assert [e.seq for e in await store.alert_history("a1")] == [2, 3]
    assert await store.list_alerts() == [newest]


async def test_list_alerts_filters_and_order(store: SQLStore) -> None:
    firing = event("a1", 1, server="srv-1", rule_id="cpu-high", ts=T0)
    critical = event("a2", 1, server="srv-2", rule_id="disk-full", ts=T0 + timedelta(minutes=1),
                     severity=Severity.CRITICAL)
    acked = event("a3", 1, server="srv-1", rule_id="disk-full", ts=T0 + timedelta(minutes=2),
                  state=AlertState.ACKNOWLEDGED)
    resolved = event("a4", 2, server="srv-2", rule_id="cpu-high", ts=T0 + timedelta(minutes=3),
                     state=AlertState.RESOLVED)
    for item in (firing, critical, acked, event("a4", 1, ts=T0), resolved):
        await store.record_alert_event(item)

    async def ids(**filters: Any) -> list[str]:
        return [e.alert_id for e in await store.list_alerts(**filters)]

    assert await ids() == ["a4", "a3", "a2", "a1"]  # newest first, one row per alert
    assert await ids(states=["firing", "acknowledged"]) == ["a3", "a2", "a1"]
    assert await ids(states=[AlertState.RESOLVED]) == ["a4"]
    assert await ids(states=[]) == []
    assert await ids(severity="critical") == ["a2"]
    assert await ids(server_id="srv-1") == ["a3", "a1"]
    assert await ids(rule_id="cpu-high") == ["a4", "a1"]
    assert await ids(rule_id="disk-full", server_id="srv-1", states=["acknowledged"]) == ["a3"]
    assert await ids(limit=2) == ["a4", "a3"]


async def test_history_is_ordered_by_seq(store: SQLStore) -> None:
    for seq in (4, 1, 3, 2, 5):
        await store.record_alert_event(event("a1", seq))
    await store.record_alert_event(event("other", 1))
    assert [e.seq for e in await store.alert_history("a1")] == [1, 2, 3, 4, 5]
    assert [e.seq for e in await store.alert_history("a1", limit=2)] == [4, 5]  # the newest
    assert await store.alert_history("nope") == []


async def test_server_alert_events_since(store: SQLStore) -> None:
    await store.record_alert_event(event("a1", 1, ts=T0))
    await store.record_alert_event(event("a2", 1, ts=T0 + timedelta(minutes=2)))
    await store.record_alert_event(event("a1", 2, ts=T0 + timedelta(minutes=1)))
    await store.record_alert_event(event("a3", 1, server="srv-2", ts=T0 + timedelta(minutes=1)))
    found = await store.server_alert_events("srv-1", T0 + timedelta(minutes=1))
    assert [(e.alert_id, e.seq) for e in found] == [("a1", 2), ("a2", 1)]  # ts >= since, ascending
    assert len(await store.server_alert_events("srv-1", T0)) == 3
    assert await store.server_alert_events("srv-9", T0) == []


async def test_timestamps_come_back_as_aware_utc(store: SQLStore) -> None:
    plus2 = timezone(timedelta(hours=2))
    local = datetime(2025, 6, 1, 14, 0, tzinfo=plus2)  # 12:00 UTC
    await store.record_alert_event(event("a1", 1, ts=local))
    found = await store.server_alert_events("srv-1", datetime(2025, 6, 1, 13, 30, tzinfo=plus2))
    assert [e.ts for e in found] == [T0] and found[0].ts.tzinfo is UTC
    assert await store.server_alert_events("srv-1", T0 + timedelta(microseconds=1)) == []

    await store.enqueue_notification("a1", 1, "hook", {})
    (due,) = await store.due_notifications(datetime.now(UTC))
    assert due.next_attempt_at.utcoffset() == timedelta(0)
    with pytest.raises(SQLError, match="timezone"):
        await store.due_notifications(datetime(2025, 6, 1, 12, 0))  # naive


async def test_notification_outbox(store: SQLStore) -> None:
    payload = {"alert_id": "a1", "state": "firing", "labels": {"server_id": "srv-1"}}
    assert await store.enqueue_notification("a1", 1, "webhook", payload) is True
    assert await store.enqueue_notification("a1", 1, "webhook", {"other": 1}) is False
    assert await store.enqueue_notification("a1", 1, "email", payload) is True
    assert await store.enqueue_notification("a1", 2, "webhook", payload) is True
    assert await store.notification_counts() == {"pending": 3, "sent": 0, "failed": 0}

    now = datetime.now(UTC)
    due = await store.due_notifications(now)
    assert [(n.alert_id, n.seq, n.receiver) for n in due] == [
        ("a1", 1, "webhook"), ("a1", 1, "email"), ("a1", 2, "webhook")]  # oldest first
    hook, email, second = due
    assert hook.payload == payload and hook.attempts == 0 and hook.last_error is None
    assert [n.id for n in await store.due_notifications(now, limit=1)] == [hook.id]
    assert await store.due_notifications(now - timedelta(hours=1)) == []

    await store.notification_sent(hook.id, now)
    await store.notification_failed(email.id, "HTTP 503", now + timedelta(minutes=1))
    assert [n.id for n in await store.due_notifications(now)] == [second.id]
    _, retry = await store.due_notifications(now + timedelta(minutes=1))  # by next attempt
    assert (retry.id, retry.attempts, retry.last_error) == (email.id, 1, "HTTP 503")

    await store.notification_failed(email.id, "HTTP 503 again", None)  # give up
    assert [n.id for n in await store.due_notifications(now + timedelta(hours=1))] == [second.id]
    assert await store.notification_counts() == {"pending": 1, "sent": 1, "failed": 1}
    # A late report about a settled notification changes nothing.
    await store.notification_failed(hook.id, "late", None)
    await store.notification_sent(email.id, now)
    assert await store.notification_counts() == {"pending": 1, "sent": 1, "failed": 1}


async def test_an_unreachable_database_raises_a_readable_sql_error() -> None:
    sql = SQLStore(SQLSettings(url="postgresql+asyncpg://postgres@127.0.0.1:1/x"))
    try:
        async with asyncio.timeout(30):
            with pytest.raises(SQLError) as caught:
                await sql.list_rules()
    finally:
        await sql.close()
    message = str(caught.value)
    assert caught.value.unreachable
    assert message.startswith("list rules failed: cannot reach the database at "
                              "postgresql+asyncpg://postgres@127.0.0.1:1/x")
    assert "Connect call failed" in message and "\n" not in message


def test_an_unsupported_url_is_refused() -> None:
    with pytest.raises(SQLError, match="unsupported database URL"):
        SQLStore(SQLSettings(url="mysql://root@127.0.0.1/x"))
    with pytest.raises(SQLError, match="invalid database URL"):
        SQLStore(SQLSettings(url="not a url"))
