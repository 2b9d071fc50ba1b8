"""Settings of the UI process (``FLEETDECK_`` environment variables, ``__`` nests)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.kafka import KafkaSettings
from connectors.redis_live import RedisSettings
from connectors.sql import SQLSettings
from connectors.victoriametrics import VMSettings


class UISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETDECK_", env_nested_delimiter="__",
                                      extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    vm: VMSettings = Field(default_factory=VMSettings)
    sse_max_clients: int = Field(150, ge=1, description="Concurrent SSE streams; more get 503")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    sql: SQLSettings = Field(default_factory=SQLSettings)
    alert_rules_file: Path | None = Field(
        None, description="YAML file of alert rules loaded at start (its rules replace "
        "those with the same id)")
    sse_ping_s: float = Field(15.0, gt=0, description="Keep-alive comment interval on SSE")
    keys_dir: Path = Field(Path(".fleetdeck/keys"), description="Directory of the control "
                           "plane's Ed25519 signing key (made on first start; agents pin "
                           "signing.pub)")
