"""Where the SQL store is: a settings model alone, so processes that only pass it on (the
CLI, the agent) do not load SQLAlchemy and Alembic (about 25 MB of memory)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SQLSettings(BaseModel):
    url: str = Field("sqlite+aiosqlite:///.fleetdeck/fleetdeck.db",
                     description="SQLAlchemy URL: sqlite+aiosqlite:///path/to.db or "
                     "postgresql+asyncpg://user:password@host:5432/db (plain sqlite:// and "
                     "postgresql:// get the async driver)")
    echo: bool = Field(False, description="Log every SQL statement (debugging)")
