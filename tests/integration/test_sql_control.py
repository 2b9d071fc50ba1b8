"""The SQL store's command bus, audit log and identity parts on SQLite and a real PostgreSQL.

PostgreSQL must run at 127.0.0.1:5432 with trust auth for ``postgres``; each run of this
module creates a database of its own and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from connectors.sql import (
    ApiToken,
    Base,
    Enrolled,
    Enrollment,
    Server,
    Session,
    SQLError,
    SQLSettings,
    SQLStore,
)
from schemas.audit import GENESIS, AuditEvent, canonical, chain_hash
from schemas.commands import Command, CommandRecord, CommandStatus, PingParams

pytestmark = pytest.mark.integration

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
NEW_TABLES = {"commands", "audit_log", "tenants", "users", "memberships", "api_tokens",
              "sessions", "approval_policies", "servers", "enrollment_tokens"}


async def pg_connect(database: str) -> asyncpg.Connection:
    try:
        async with asyncio.timeout(10):
            return await asyncpg.connect(**PG, database=database)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        problem = repr(exc)
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
    if postgres_db is None:
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
                    await conn.execute(f"TRUNCATE {', '.join(Base.metadata.tables)} "
                                       "RESTART IDENTITY")
                finally:
                    await conn.close()
        yield sql
    finally:
        await sql.close()


async def raw(store: SQLStore, statement: str, **params: Any) -> None:
    """Run SQL behind the store's back (what someone tampering with the database does)."""
    engine = create_async_engine(store.settings.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement), params)
    finally:
        await engine.dispose()


def schema_diff(connection: Connection) -> tuple[str | None, list[Any], set[str]]:
    context = MigrationContext.configure(connection)
    tables = set(connection.dialect.get_table_names(connection))
    return context.get_current_revision(), compare_metadata(context, Base.metadata), tables


def record(tenant: str = "acme", server: str = "srv-1", *, at: datetime = T0,
           status: CommandStatus = CommandStatus.QUEUED, ttl_s: float = 60) -> CommandRecord:
    command = Command(tenant=tenant, server_id=server, type="PING", params=PingParams(),
                      actor="alice", reason="is it up?", issued_at=at,
                      expires_at=at + timedelta(seconds=ttl_s))
    return CommandRecord(command=command, status=status, created_at=at, updated_at=at)


def audit(n: int, *, tenant: str = "acme", actor: str = "alice", action: str = "command.create",
          target: str | None = None, at: datetime = T0) -> AuditEvent:
    return AuditEvent(tenant=tenant, actor=actor, action=action, target=target or f"t:{n}",
                      ts=at + timedelta(seconds=n))


def token(token_id: str, tenant: str = "acme", at: datetime = T0) -> ApiToken:
    return ApiToken(id=token_id, tenant=tenant, role="operator", name=f"bot-{token_id}",
                    secret_hash="ab" * 32, created_by="admin", created_at=at,
                    expires_at=at + timedelta(days=1), revoked_at=None, last_used_at=None)


# --- schema --------------------------------------------------------------------------------------

async def test_the_migrations_create_the_tables_the_models_describe(store: SQLStore) -> None:
    await store.migrate()  # a second time: a no-op
    engine = create_async_engine(store.settings.url)
    try:
        async with engine.connect() as conn:
            revision, diff, tables = await conn.run_sync(schema_diff)
    finally:
        await engine.dispose()
    assert revision == "0002"
    assert NEW_TABLES <= tables
    assert diff == []


# --- commands ------------------------------------------------------------------------------------

async def test_create_get_duplicate_and_tenant_isolation(store: SQLStore) -> None:
    first = record()
    await store.create_command(first)
    with pytest.raises(SQLError, match="exists already"):
        await store.create_command(first)
    assert await store.get_command(first.command.id) == first
    assert await store.get_command(first.command.id, tenant="acme") == first
    assert await store.get_command(first.command.id, tenant="globex") is None
    assert await store.get_command("0" * 32) is None


async def test_list_commands_newest_first_with_filters(store: SQLStore) -> None:
    a = record(server="srv-1", at=T0)
    b = record(server="srv-2", at=T0 + timedelta(minutes=1), status=CommandStatus.SUCCEEDED)
    c = record(server="srv-1", at=T0 + timedelta(minutes=2), status=CommandStatus.ACKED)
    other = record(tenant="globex", server="srv-1", at=T0 + timedelta(minutes=3))
    for item in (a, b, c, other):
        await store.create_command(item)

    async def ids(**filters: Any) -> list[str]:
        return [r.command.id for r in await store.list_commands("acme", **filters)]

    assert await ids() == [c.command.id, b.command.id, a.command.id]
    assert await ids(server_id="srv-1") == [c.command.id, a.command.id]
    assert await ids(statuses=["queued", "acked"]) == [c.command.id, a.command.id]
    assert await ids(statuses=[CommandStatus.SUCCEEDED]) == [b.command.id]
    assert await ids(statuses=[]) == []
    assert await ids(limit=1) == [c.command.id]
    assert await ids(before=c.created_at) == [b.command.id, a.command.id]
    assert [r.command.id for r in await store.list_commands("globex")] == [other.command.id]


async def test_update_command_is_compare_and_set(store: SQLStore) -> None:
    queued = record()
    await store.create_command(queued)
    at = T0 + timedelta(seconds=5)
    acked = queued.moved(CommandStatus.ACKED, at, "agent acked", acked_at=at)
    deadline = at + timedelta(seconds=30)
    assert await store.update_command(acked, expect_status="queued", deadline_at=deadline)
    assert await store.get_command(queued.command.id) == acked
    # A second delivery of the same report, or anyone who read the old status, loses.
    assert not await store.update_command(acked, expect_status="queued")
    assert not await store.update_command(record(), expect_status="queued")  # unknown id
    assert await store.get_command(queued.command.id) == acked
    assert [r.command.id for r in await store.due_commands(deadline)] == [queued.command.id]

    # Racing writers (two workers after a rebalance): exactly one wins.
    running = acked.moved(CommandStatus.RUNNING, at, "running")
    async with asyncio.timeout(30):
        won = await asyncio.gather(*(store.update_command(running, expect_status="acked")
                                     for _ in range(5)))
    assert sorted(won) == [False] * 4 + [True]
    # No deadline given: it is cleared, so the command is no longer due by its deadline.
    assert await store.due_commands(deadline + timedelta(hours=1)) == []


async def test_batches_of_commands_are_read_planned_and_compared_and_set_together(
        store: SQLStore) -> None:
    first, second, third = record(), record(), record()
    for r in (first, second, third):
        await store.create_command(r)
    ids = [first.command.id, second.command.id, third.command.id]
    got = await store.get_commands([first.command.id, second.command.id, "0" * 32])
    assert got == {first.command.id: first, second.command.id: second}
    at = T0 + timedelta(seconds=5)
    acked = [r.moved(CommandStatus.ACKED, at, "agent acked", acked_at=at)
             for r in (first, second, third)]
    # the third was moved by someone else first: only its compare-and-set fails
    assert await store.update_command(acked[2], expect_status="queued")
    seen: list[dict[str, CommandRecord]] = []

    def plan(stored: dict[str, CommandRecord]) -> list[tuple[CommandRecord, str, Any]]:
        seen.append(stored)
        return [(a, "queued", at + timedelta(seconds=30)) for a in acked]

    stored, written = await store.change_commands([*ids, "0" * 32], plan)
    assert seen == [stored] and set(stored) == set(ids)
    assert stored[first.command.id] == first  # as read, before the change
    assert stored[third.command.id] == acked[2]
    assert written == [True, True, False]
    assert (await store.get_commands(ids)) == {a.command.id: a for a in acked}
    assert await store.change_commands([], plan) == ({}, [])
    assert len(seen) == 1  # nothing to read: no plan


async def test_the_tracker_stores_a_batch_of_reports_and_audits_finished_commands(
        store: SQLStore) -> None:
    from schemas.commands import CommandEvent, EventKind
    from streams.commands.worker import CommandTracker

    class Live:
        class keys:
            commands_stream = "test:commands"

        def __init__(self) -> None:
            self.published: list[str] = []

        async def publish(self, events: list[Any]) -> None:
            self.published.extend(e.data for e in events)

    audited: list[bytes] = []

    async def append(_key: str, value: bytes) -> None:
        audited.append(value)

    now = datetime.now(UTC)
    pinged, acked_only, raced = record(at=now), record(at=now), record(at=now)
    for r in (pinged, acked_only, raced):
        await store.create_command(r)
    live = Live()
    tracker = CommandTracker(store, live, append)  # type: ignore[arg-type]

    def report(r: CommandRecord, kind: EventKind, **fields: Any) -> bytes:
        return CommandEvent(tenant=r.command.tenant, server_id=r.command.server_id,
                            command_id=r.command.id, kind=kind, **fields).model_dump_json().encode()

    # someone else moves `raced` first: its compare-and-set fails and it is applied again
    stolen = raced.moved(CommandStatus.ACKED, now, "acked elsewhere", acked_at=now)
    assert await store.update_command(stolen, expect_status="queued")
    bad = await tracker.handle([
        report(pinged, EventKind.ACKED), report(pinged, EventKind.RUNNING, seq=1),
        report(pinged, EventKind.SUCCEEDED, seq=2, result={"pong": "hi"}),
        report(acked_only, EventKind.ACKED), report(raced, EventKind.RUNNING, seq=1),
        b"not json", report(record(), EventKind.ACKED)])
    assert bad == 1 and tracker.ignored == 1
    got = await store.get_commands([pinged.command.id, acked_only.command.id, raced.command.id])
    assert got[pinged.command.id].status == CommandStatus.SUCCEEDED
    assert got[pinged.command.id].result == {"pong": "hi"}
    assert got[acked_only.command.id].status == CommandStatus.ACKED
    assert got[raced.command.id].status == CommandStatus.RUNNING
    assert len(live.published) == 5  # acked, running, succeeded, acked, running
    [finished] = [AuditEvent.model_validate_json(v) for v in audited]
    assert finished.target == f"command:{pinged.command.id}"
    assert finished.outcome == "succeeded"


async def test_an_approved_command_gets_its_new_expiry(store: SQLStore) -> None:
    waiting = record(status=CommandStatus.PENDING_APPROVAL, ttl_s=3600)
    await store.create_command(waiting)
    approved_at = T0 + timedelta(minutes=50)
    command = waiting.command.model_copy(update={
        "issued_at": approved_at, "expires_at": approved_at + timedelta(minutes=30)})
    queued = waiting.moved(CommandStatus.QUEUED, approved_at, "approved", command=command)
    assert await store.update_command(queued, expect_status="pending-approval")
    assert await store.due_commands(T0 + timedelta(hours=1)) == []  # the old expiry
    assert await store.due_commands(approved_at + timedelta(minutes=30)) == [queued]


async def test_due_commands_finds_both_kinds_of_overdue(store: SQLStore) -> None:
    now = T0 + timedelta(minutes=10)
    expired = record(at=T0)  # queued, expired at T0 + 60 s
    fresh = record(at=now - timedelta(seconds=10))  # queued, expires after now
    waiting = record(at=T0 - timedelta(minutes=1), status=CommandStatus.PENDING_APPROVAL)
    finished = record(at=T0 - timedelta(minutes=2), status=CommandStatus.SUCCEEDED)
    stuck = record(at=T0 - timedelta(minutes=3))
    busy = record(at=T0 - timedelta(minutes=4))
    for item in (expired, fresh, waiting, finished, stuck, busy):
        await store.create_command(item)
    acked = stuck.moved(CommandStatus.ACKED, T0, "acked")
    assert await store.update_command(acked, expect_status="queued", deadline_at=now)
    running = busy.moved(CommandStatus.RUNNING, T0, "running")
    assert await store.update_command(running, expect_status="queued",
                                      deadline_at=now + timedelta(seconds=1))

    due = await store.due_commands(now)
    assert [r.command.id for r in due] == [acked.command.id, waiting.command.id,
                                           expired.command.id]  # oldest first
    assert due[0] == acked
    assert len(await store.due_commands(now, limit=2)) == 2
    assert {r.command.id for r in await store.due_commands(now + timedelta(minutes=1))} == {
        acked.command.id, running.command.id, waiting.command.id, expired.command.id,
        fresh.command.id}


# --- audit log -----------------------------------------------------------------------------------

async def test_append_chains_records_and_skips_redeliveries(store: SQLStore) -> None:
    events = [audit(i) for i in range(3)]
    assert await store.append_audit(events) == 3
    assert await store.append_audit(events) == 0  # a redelivered batch
    assert await store.append_audit([]) == 0
    extra = audit(9)
    assert await store.append_audit([events[1], extra, extra]) == 1  # repeats in the batch

    chain = await store.audit_chain()
    assert [r.seq for r in chain] == [1, 2, 3, 4]
    assert [r.event_id for r in chain] == [*(e.id for e in events), extra.id]
    prev = GENESIS
    for stored, event in zip(chain, [*events, extra], strict=True):
        assert stored.body == canonical(event)
        assert (stored.prev_hash, stored.hash) == (prev, chain_hash(prev, stored.body))
        assert dict(stored.columns) == {"tenant": "acme", "actor": "alice",
                                        "action": "command.create", "target": event.target}
        prev = stored.hash
    assert [r.seq for r in await store.audit_chain(after_seq=2, limit=1)] == [3]
    assert await store.verify_audit() == (4, [])


async def test_concurrent_appenders_build_one_gapless_chain(store: SQLStore) -> None:
    batches = [[audit(i * 10 + j, actor=f"worker-{i}") for j in range(10)] for i in range(6)]
    redelivered = [batches[0], batches[3]]  # two batches come twice, racing the first copies
    async with asyncio.timeout(60):
        appended = await asyncio.gather(*(store.append_audit(b)
                                          for b in [*batches, *redelivered]))
    assert sum(appended) == 60
    chain = await store.audit_chain(limit=1000)
    assert [r.seq for r in chain] == list(range(1, 61))
    assert len({r.event_id for r in chain}) == 60

    seen: list[int] = []
    checked, problems = await store.verify_audit(progress=seen.append)
    assert (checked, problems) == (60, [])
    assert seen == [60]


async def test_verify_walks_several_pages(store: SQLStore,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.sql_commands

    monkeypatch.setattr(connectors.sql_commands, "VERIFY_PAGE", 4)
    assert await store.append_audit([audit(i) for i in range(10)]) == 10
    seen: list[int] = []
    assert await store.verify_audit(progress=seen.append) == (10, [])
    assert seen == [4, 8, 10]
    await raw(store, "DELETE FROM audit_log WHERE seq = 5")  # the first of a page
    checked, problems = await store.verify_audit()
    assert checked == 9
    assert [(p.seq, p.problem) for p in problems] == [(6, "records 5..5 are missing")]


async def test_an_edited_body_is_named_by_its_seq(store: SQLStore) -> None:
    events = [audit(i) for i in range(5)]
    await store.append_audit(events)
    await raw(store, "UPDATE audit_log SET body = replace(body, 'alice', 'mallory') "
              "WHERE seq = 3")
    checked, problems = await store.verify_audit()
    assert checked == 5
    assert [(p.seq, p.event_id) for p in problems] == [(3, events[2].id)]
    assert "changed after it was written" in problems[0].problem


async def test_an_edited_filter_column_is_found(store: SQLStore) -> None:
    await store.append_audit([audit(i) for i in range(4)])
    await raw(store, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    _, problems = await store.verify_audit()
    assert [(p.seq, p.problem) for p in problems] == [
        (2, "column actor was changed after it was written")]
    # Filters read the column, so the forged actor is what they see until verify says so.
    assert [e.seq for e in await store.list_audit("acme", actor="mallory")] == [2]


async def test_a_deleted_middle_record_is_found_but_a_deleted_last_one_is_not(
        store: SQLStore) -> None:
    await store.append_audit([audit(i) for i in range(5)])
    await raw(store, "DELETE FROM audit_log WHERE seq = 5")
    assert await store.verify_audit() == (4, [])  # the documented blind spot
    await raw(store, "DELETE FROM audit_log WHERE seq = 2")
    checked, problems = await store.verify_audit()
    assert checked == 3
    assert [(p.seq, p.problem) for p in problems] == [(3, "records 2..2 are missing")]
    # A new append continues after the newest remaining record.
    assert await store.append_audit([audit(7)]) == 1
    assert [r.seq for r in await store.audit_chain()] == [1, 3, 4, 5]


async def test_list_audit_filters_and_pages(store: SQLStore) -> None:
    events = [
        audit(1, action="command.create", target="command:c1"),
        audit(2, action="command.approve", target="command:c1", actor="bob"),
        audit(3, action="commander.x", target="x"),
        audit(4, action="login", target="user:alice"),
        audit(5, action="test_a.one"),
        audit(6, action="testba.one"),
        audit(7, tenant="globex", action="command.create", target="command:c9"),
    ]
    await store.append_audit(events)

    async def seqs(tenant: str | None = "acme", **filters: Any) -> list[int]:
        return [e.seq for e in await store.list_audit(tenant, **filters)]

    assert await seqs() == [6, 5, 4, 3, 2, 1]
    assert await seqs(None) == [7, 6, 5, 4, 3, 2, 1]
    assert await seqs("globex") == [7]
    assert await seqs(action="command.create") == [1]
    assert await seqs(action="command.*") == [2, 1]
    assert await seqs(action="command.") == [2, 1]
    assert await seqs(action="command*") == [3, 2, 1]
    assert await seqs(action="test_a.") == [5]  # _ is a character, not a wildcard
    assert await seqs(actor="bob") == [2]
    assert await seqs(target="command:c1") == [2, 1]
    assert await seqs(target="command:c9") == []  # another tenant's
    assert await seqs(since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=4)) == [3, 2]
    assert await seqs(limit=2) == [6, 5]
    assert await seqs(limit=2, before_seq=5) == [4, 3]
    assert await seqs(limit=2, before_seq=3) == [2, 1]

    (entry,) = await store.list_audit("acme", actor="bob")
    assert entry.event == events[1]
    assert entry.hash == (await store.audit_chain(after_seq=1, limit=1))[0].hash


# --- identity --------------------------------------------------------------------------------

async def test_tenants_users_and_memberships(store: SQLStore) -> None:
    assert await store.create_tenant("acme", "Acme Inc") is True
    assert await store.create_tenant("acme", "Other name") is False
    assert await store.create_tenant("globex", "Globex") is True
    tenant = await store.get_tenant("acme")
    assert tenant is not None and tenant.name == "Acme Inc" and tenant.created_at.tzinfo is UTC
    assert await store.get_tenant("nope") is None
    assert [t.id for t in await store.list_tenants()] == ["acme", "globex"]

    assert await store.create_user("alice", "hash-1") is True
    assert await store.create_user("alice", "hash-2") is False
    user = await store.get_user("alice")
    assert user is not None and (user.password_hash, user.disabled) == ("hash-1", False)
    assert await store.set_password("alice", "hash-3") is True
    assert await store.set_password("nobody", "hash-3") is False
    assert (await store.get_user("alice")).password_hash == "hash-3"  # type: ignore[union-attr]
    assert await store.get_user("nobody") is None

    assert await store.memberships("alice") == {}
    await store.set_membership("alice", "acme", "viewer")
    await store.set_membership("alice", "globex", "operator")
    await store.set_membership("alice", "acme", "admin")  # an upsert
    await store.set_membership("bob", "acme", "approver")
    assert await store.memberships("alice") == {"acme": "admin", "globex": "operator"}
    with pytest.raises(SQLError, match="unknown role"):
        await store.set_membership("alice", "acme", "root")
    assert await store.memberships("alice") == {"acme": "admin", "globex": "operator"}


async def test_tokens_create_get_list_revoke(store: SQLStore) -> None:
    first, second = token("t1"), token("t2", at=T0 + timedelta(minutes=1))
    for item in (first, second, token("t3", tenant="globex")):
        await store.create_token(item)
    with pytest.raises(SQLError, match="exists already"):
        await store.create_token(first)
    assert await store.get_token("t1") == first
    assert await store.get_token("nope") is None
    assert await store.list_tokens("acme") == [second, first]  # newest first
    assert [t.id for t in await store.list_tokens("globex")] == ["t3"]

    at = T0 + timedelta(hours=1)
    assert await store.revoke_token("t1", "globex", at) is False  # not that tenant's
    assert (await store.get_token("t1")) == first
    assert await store.revoke_token("t1", "acme", at) is True
    assert await store.revoke_token("t1", "acme", at + timedelta(hours=1)) is False
    revoked = await store.get_token("t1")
    assert revoked is not None and revoked.revoked_at == at


async def test_touch_token_writes_at_most_once_a_minute(store: SQLStore) -> None:
    await store.create_token(token("t1"))
    used = T0 + timedelta(minutes=5)

    async def last_used() -> datetime | None:
        found = await store.get_token("t1")
        assert found is not None
        return found.last_used_at

    await store.touch_token("t1", used)
    assert await last_used() == used
    await store.touch_token("t1", used + timedelta(seconds=59))
    assert await last_used() == used
    await store.touch_token("t1", used + timedelta(seconds=61))
    assert await last_used() == used + timedelta(seconds=61)
    await store.touch_token("nope", used)  # unknown: nothing to do


async def test_sessions_create_get_revoke(store: SQLStore) -> None:
    session = Session(id="ab" * 32, username="alice", tenant="acme", role="admin",
                      created_at=T0, expires_at=T0 + timedelta(hours=12), revoked_at=None)
    await store.create_session(session)
    with pytest.raises(SQLError, match="exists already"):
        await store.create_session(session)
    assert await store.get_session(session.id) == session
    assert await store.get_session("cd" * 32) is None
    at = T0 + timedelta(hours=1)
    assert await store.revoke_session(session.id, at) is True
    assert await store.revoke_session(session.id, at) is False
    assert await store.revoke_session("cd" * 32, at) is False
    found = await store.get_session(session.id)
    assert found is not None and found.revoked_at == at


async def test_approval_policies(store: SQLStore) -> None:
    assert await store.requires_approval("acme", "PING") is False  # no row
    assert await store.list_policies("acme") == {}
    await store.set_policy("acme", "PING", True)
    await store.set_policy("acme", "FILE_WRITE", False)
    assert await store.requires_approval("acme", "PING") is True
    assert await store.requires_approval("globex", "PING") is False
    await store.set_policy("acme", "PING", False)  # an upsert
    assert await store.requires_approval("acme", "PING") is False
    assert await store.list_policies("acme") == {"PING": False, "FILE_WRITE": False}


async def test_servers_upsert_get_list(store: SQLStore) -> None:
    server = Server(id="srv-1", tenant="acme", hostname="web-1", agent_version="0.1.0",
                    os="Debian 12", capabilities=("ping", "files"), enrolled_at=T0,
                    last_seen_at=None)
    await store.upsert_server(server)
    await store.upsert_server(Server(id="srv-0", tenant="globex", hostname="db-1",
                                     agent_version="0.1.0", os="Ubuntu 24.04", capabilities=(),
                                     enrolled_at=T0, last_seen_at=None))
    assert await store.get_server("srv-1") == server
    assert await store.get_server("nope") is None
    seen = T0 + timedelta(minutes=3)
    newer = Server(**{**server.__dict__, "agent_version": "0.2.0", "last_seen_at": seen,
                      "capabilities": ("ping",)})
    await store.upsert_server(newer)
    found = await store.get_server("srv-1")
    assert found == newer and found.capabilities == ("ping",)
    assert await store.list_servers("acme") == [newer]
    assert [s.id for s in await store.list_servers("globex")] == ["srv-0"]


async def test_enrollment_is_one_time_and_expires(store: SQLStore) -> None:
    def enrollment(token_id: str, expires_at: datetime) -> Enrollment:
        return Enrollment(id=token_id, tenant="acme", secret_hash="ab" * 32, created_by="admin",
                          created_at=T0, expires_at=expires_at, used_at=None, server_id=None)

    now = T0 + timedelta(minutes=5)
    await store.create_enrollment(enrollment("e1", T0 + timedelta(hours=1)))
    await store.create_enrollment(enrollment("old", now))
    with pytest.raises(SQLError, match="exists already"):
        await store.create_enrollment(enrollment("e1", T0 + timedelta(hours=1)))

    assert await store.use_enrollment("e1", "cd" * 32, "srv-1", now) is None  # wrong secret
    assert await store.use_enrollment("nope", "ab" * 32, "srv-1", now) is None
    assert await store.use_enrollment("old", "ab" * 32, "srv-1", now) is None  # expired
    async with asyncio.timeout(30):
        won = await asyncio.gather(*(store.use_enrollment("e1", "ab" * 32, f"srv-{i}", now)
                                     for i in range(5)))
    assert won.count("acme") == 1 and won.count(None) == 4  # exactly one server joins
    assert await store.use_enrollment("e1", "ab" * 32, "srv-9", now) is None  # used


async def test_enroll_server_spends_the_token_and_never_takes_another_tenants_server(
        store: SQLStore) -> None:
    def enrollment(token_id: str, tenant: str) -> Enrollment:
        return Enrollment(id=token_id, tenant=tenant, secret_hash="ab" * 32, created_by="admin",
                          created_at=T0, expires_at=T0 + timedelta(hours=1), used_at=None,
                          server_id=None)

    def server(agent_version: str = "0.1.0") -> Server:
        return Server(id="srv-1", tenant="ignored", hostname="web-1",
                      agent_version=agent_version, os="Debian 12", capabilities=("PING",),
                      enrolled_at=T0, last_seen_at=T0)

    now = T0 + timedelta(minutes=5)
    for token_id, tenant in (("a1", "acme"), ("a2", "acme"), ("g1", "globex")):
        await store.create_enrollment(enrollment(token_id, tenant))
    assert await store.enroll_server("a1", "cd" * 32, server(), now) == Enrolled(None)
    assert await store.enroll_server("a1", "ab" * 32, server(), now) == Enrolled("acme", new=True)
    assert await store.enroll_server("a1", "ab" * 32, server(), now) == Enrolled(None)  # used
    found = await store.get_server("srv-1")
    assert found is not None and found.tenant == "acme"

    taken = await store.enroll_server("g1", "ab" * 32, server("9.9"), now)
    assert taken == Enrolled("globex", conflict=True)
    assert await store.get_server("srv-1") == found  # unchanged
    assert await store.use_enrollment("g1", "ab" * 32, "srv-2", now) == "globex"  # not spent

    again = await store.enroll_server("a2", "ab" * 32, server("0.2.0"), now)
    assert again == Enrolled("acme")
    updated = await store.get_server("srv-1")
    assert updated is not None and (updated.tenant, updated.agent_version) == ("acme", "0.2.0")
