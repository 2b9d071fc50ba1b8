"""Alembic environment of the SQL store (there is no alembic.ini: see ``connectors.sql``).

:meth:`connectors.sql.SQLStore.migrate` passes an open connection in
``config.attributes["connection"]``; a developer's command built with
``connectors.sql.alembic_config(url=...)`` gets an engine of its own, and ``--sql`` (offline
mode) prints the statements instead of running them.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from connectors.sql import Base

config = context.config
target_metadata = Base.metadata  # for autogenerate; the revisions never import the models


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_offline(url: str) -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


async def run_on_url(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


def main() -> None:
    connection = config.attributes.get("connection")
    url = config.get_main_option("sqlalchemy.url")
    if connection is not None:
        run_migrations(connection)
    elif url is None:
        raise RuntimeError("alembic needs a connection or a sqlalchemy.url "
                           "(build its Config with connectors.sql.alembic_config)")
    elif context.is_offline_mode():
        run_offline(url)
    else:
        asyncio.run(run_on_url(url))


main()
