"""What every part of the SQL store shares: settings, the error, column types, the declarative
base, the engine and the transaction helpers (:class:`StoreBase`), and the migrations runner.

The store itself is :class:`connectors.sql.SQLStore`, assembled from one mixin per domain
(``sql_alerts``, ``sql_commands``, ``sql_identity``), each a subclass of :class:`StoreBase`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from pydantic import BaseModel, ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Engine,
    Integer,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from connectors.errors import ConnectorError
from connectors.sql_settings import SQLSettings

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")
CONNECT_TIMEOUT_S = 10.0
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: pg_advisory_xact_lock key held while migrating ("FD" 0001)
MIGRATE_LOCK = 0x46440001


class SQLError(ConnectorError):
    """The database could not be reached, or it refused a statement."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable  # a connection problem: trying again later may help


# --- column types and the declarative base ------------------------------------------------------

class UtcDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that takes aware datetimes only and returns aware UTC.

    SQLite has no time zones: values go in as naive UTC (so text comparison orders them) and
    come back marked UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must carry a timezone (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite auto-increments only an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit sequence.
RowId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


# --- the store's base: engine, transactions, migrations ----------------------------------------

class StoreBase:
    """Async client of the control-plane database (one connection pool, opened on first use)."""

    def __init__(self, settings: SQLSettings) -> None:
        self.settings = settings
        url = _async_url(settings.url)
        self._where = url.render_as_string(hide_password=True)
        self._dialect = url.get_backend_name()
        #: the SQLite database's file (None: PostgreSQL or in memory)
        self.sqlite_path = sqlite_file(url)
        self._engine = _engine(url, settings.echo)
        self._writer = _sqlite_writer(url, settings.echo)

    async def close(self) -> None:
        await self._engine.dispose()
        if self._writer is not None:
            self._writer.dispose()

    async def _write(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run ``work`` (plain blocking SQLAlchemy calls on the connection it is given) as one
        transaction, committed when it returns; library errors become SQLError.

        SQLite has one write lock for the whole database. Run statement by statement from
        the event loop, a transaction holds it from its first write until the loop comes
        round to send the COMMIT, and under load the other writers (UI, workers) sleep in
        SQLite's busy handler that long. So on SQLite the whole transaction runs on a worker
        thread, holding the lock for its statements only. PostgreSQL has no such lock: there
        ``work`` runs on the async connection.
        """
        if self._writer is None:
            async with self._tx(what) as conn:
                return await conn.run_sync(work)
        try:
            return await asyncio.to_thread(_in_transaction, self._writer, work)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise _error(what, self._where, exc) from exc

    async def migrate(self) -> None:
        """Upgrade the schema to the newest migration (a no-op when it is there already)."""
        async with self._tx("migrate") as conn:
            # One migration at a time when processes start together (UI and workers); the
            # others wait, then find the schema current.
            await self._lock_writers(conn, MIGRATE_LOCK)
            try:
                await conn.run_sync(_upgrade)
            except CommandError as exc:
                raise SQLError(f"migrate failed on {self._where}: {exc}") from exc

    async def _lock_writers(self, conn: AsyncConnection, key: int) -> None:
        """Serialise the callers holding ``key`` until the transaction ends: PostgreSQL takes
        the advisory lock ``key``; SQLite takes its (only) write lock, whatever the key."""
        await conn.run_sync(lock_writers, key)

    @asynccontextmanager
    async def _tx(self, what: str) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction (committed on exit); library errors become SQLError."""
        try:
            async with self._engine.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise _error(what, self._where, exc) from exc

    @asynccontextmanager
    async def _autocommit(self, what: str) -> AsyncIterator[AsyncConnection]:
        """A connection for one statement that commits by itself (library errors become
        SQLError). One statement is atomic on its own; without the transaction around it,
        SQLite's write lock is held only while the statement runs in the driver's thread,
        not until this event loop comes round to send the COMMIT. Under load that wait was
        what the other writers (UI, workers) slept on in SQLite's busy handler."""
        try:
            async with self._engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise _error(what, self._where, exc) from exc

    def _insert(self, entity: type[Base]) -> postgresql.Insert | sqlite.Insert:
        """INSERT with the dialect's ON CONFLICT clauses (both spell them the same way)."""
        return postgresql.insert(entity) if self._dialect == "postgresql" else sqlite.insert(entity)

    async def _insert_new(self, what: str, entity: type[Base], values: dict[str, Any]) -> bool:
        """INSERT ``values`` unless the primary key is taken: True if the row is new."""
        async with self._autocommit(what) as conn:
            added = await conn.execute(
                self._insert(entity).values(values).on_conflict_do_nothing())
        return bool(added.rowcount)

    async def _insert_once(self, what: str, entity: type[Base], values: dict[str, Any],
                           name: str) -> None:
        """INSERT ``values``; SQLError naming ``name`` if its primary key is taken."""
        if not await self._insert_new(what, entity, values):
            raise SQLError(f"{what} failed: {name} exists already")

    async def _upsert(self, what: str, entity: type[Base], values: dict[str, Any],
                      keys: Sequence[str] | None = None) -> bool:
        """INSERT ``values``, or update the row with the same ``keys`` (default: the primary
        key): True if it is new.

        Two statements rather than one: only the first one's row count tells new from
        replaced on both backends, and the second one is an upsert too, as the row may have
        been deleted in between.
        """
        if keys is None:
            keys = [column.name for column in entity.__table__.primary_key]
        async with self._tx(what) as conn:
            added = await conn.execute(
                self._insert(entity).values(values).on_conflict_do_nothing())
            if added.rowcount:
                return True
            stmt = self._insert(entity).values(values)
            await conn.execute(stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={k: stmt.excluded[k] for k in values if k not in keys}))
            return False

    async def _execute(self, what: str, statement: Any) -> int:
        """Run one statement; how many rows it matched."""
        async with self._autocommit(what) as conn:
            return int((await conn.execute(statement)).rowcount)

    async def _scalar(self, what: str, query: Any) -> Any:
        async with self._tx(what) as conn:
            return (await conn.execute(query)).scalar()

    async def _scalars(self, what: str, query: Any) -> list[Any]:
        async with self._tx(what) as conn:
            return list((await conn.execute(query)).scalars())

    async def _rows(self, what: str, query: Any) -> list[Any]:
        async with self._tx(what) as conn:
            return list((await conn.execute(query)).all())


# --- engine, migrations, conversions -------------------------------------------------------------

def lock_writers(conn: Connection, key: int) -> None:
    """:meth:`StoreBase._lock_writers` on a plain connection (for :meth:`StoreBase._write`)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(key)))
    else:
        # The driver would begin a transaction only before DML (leaving DDL and reads on
        # their own); this begins one now and takes the write lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return work(conn)


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration, built in code (no alembic.ini): the shipped migrations, run on
    ``connection`` (what :meth:`StoreBase.migrate` does) or on ``url``. For developers::

        config = alembic_config(url="sqlite+aiosqlite:///dev.db")
        command.upgrade(config, "head")
        command.revision(config, "what changed", autogenerate=True)
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _async_url(raw: str) -> URL:
    """Parse the URL, choosing the async driver for plain sqlite:// and postgresql://."""
    try:
        url = make_url(raw)
    except SQLAlchemyError as exc:
        raise SQLError(f"invalid database URL {raw!r}: {exc}") from exc
    drivers = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
    if url.drivername in drivers:
        url = url.set(drivername=drivers[url.drivername])
    if url.drivername not in drivers.values():
        raise SQLError(f"unsupported database URL {url.render_as_string(hide_password=True)}: "
                       "use sqlite+aiosqlite:// or postgresql+asyncpg://")
    return url


def _engine(url: URL, echo: bool) -> AsyncEngine:
    if url.get_backend_name() == "postgresql":
        return create_async_engine(url, echo=echo, pool_pre_ping=True,
                                   connect_args={"timeout": CONNECT_TIMEOUT_S})
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, echo=echo)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite database URL (None: PostgreSQL, in memory, or a file: URI)."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:") \
            or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_writer(url: URL, echo: bool) -> Engine | None:
    """For a SQLite file, a blocking engine on the same file for :meth:`StoreBase._write`
    (None for PostgreSQL and for in-memory databases, which another engine would not see)."""
    if sqlite_file(url) is None:
        return None
    engine = create_engine(url.set(drivername="sqlite+pysqlite"), echo=echo,
                           connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers (the UI) run while a writer (a worker) commits; writers queue for up to
    the busy timeout instead of failing at once with "database is locked"."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _error(what: str, where: str, exc: BaseException) -> SQLError:
    """A readable SQLError for a library error: the driver's message, without SQL or links."""
    unreachable = isinstance(exc, OSError | TimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)
    if unreachable:
        return SQLError(f"{what} failed: cannot reach the database at {where}: "
                        f"{_reason(exc)}", unreachable=True)
    return SQLError(f"{what} failed on {where}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    """``Kind: first line of the message``. SQLAlchemy's own message would add the statement,
    its parameters and a link; a DBAPIError's class names the kind (IntegrityError, ...) better
    than the driver's adapted one."""
    kind = type(exc).__name__
    if isinstance(exc, StatementError) and exc.orig is not None:
        if not isinstance(exc, DBAPIError):  # e.g. a bind parameter that did not convert
            kind = type(exc.orig).__name__
        exc = exc.orig
    text = str(exc).strip().splitlines()
    return f"{kind}: {text[0]}" if text else kind


def _load(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SQLError(f"a stored {model.__name__} no longer validates: {exc}") from exc


def _load_valid(model: type[M], rows: Iterable[Any]) -> list[M]:
    found = []
    for data in rows:
        try:
            found.append(model.model_validate(data))
        except ValidationError as exc:
            log.error("skipping a stored %s that no longer validates: %s", model.__name__,
                      str(exc)[:300])
    return found
