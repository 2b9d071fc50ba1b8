"""Settings of the embedded stack (``fleetdeck up``, benches and test fixtures)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETDECK_STACK_", extra="ignore")

    data_dir: Path = Field(Path(".fleetdeck"), description="Data directories and logs go here")
    host: str = "127.0.0.1"
    kafka_port: int = Field(9092, ge=0, le=65535, description="0 or busy: a free port is used")
    vm_port: int = Field(8428, ge=0, le=65535, description="0 or busy: a free port is used")
    ui_port: int = Field(8000, ge=0, le=65535, description="0 or busy: a free port is used")
    redis_url: str = Field("redis://127.0.0.1:6379/0",
                           description="Used when reachable; otherwise redis-server is started")
    redis_prefix: str = Field("fd:", description="Key prefix of this stack in Redis")
    sql_url: str = Field("", description="SQL store URL (default: a SQLite file in data_dir; "
                         "postgresql+asyncpg://... for PostgreSQL)")
    alert_rules_file: Path | None = Field(None, description="YAML alert rules (default: the "
                                          "rules shipped with FleetDeck)")
    webhook_urls: list[str] = Field(default_factory=list, description="Alertmanager-format "
                                    "webhook receivers for alert notifications")
    vm_binary: str = "/usr/bin/victoria-metrics"
    redis_binary: str = "redis-server"
