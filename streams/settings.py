"""Settings of the stream worker (``FLEETDECK_`` environment variables, ``__`` nests)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.kafka import KafkaSettings
from connectors.redis_live import RedisSettings
from connectors.sql import SQLSettings
from connectors.victoriametrics import VMSettings
from connectors.webhook import WebhookSettings
from streams.alerts.logic import AlertPolicy
from streams.health.logic import HealthPolicy


class StreamsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETDECK_", env_nested_delimiter="__",
                                      extra="ignore")

    app_id: str = Field("fleetdeck-streams", description="Faust app id (consumer group)")
    role: Literal["all", "live", "store", "control"] = Field(
        "all", description="live: health, alerts, Redis fan-out, dead letters; store: "
        "VictoriaMetrics writes, rollups, alert history and notifications; control: command "
        "tracking and the audit log; each in a consumer group of its own; all: every role in "
        "one process")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    vm: VMSettings = Field(default_factory=VMSettings)
    health: HealthPolicy = Field(default_factory=HealthPolicy)
    alerts: AlertPolicy = Field(default_factory=AlertPolicy)
    sql: SQLSettings = Field(default_factory=SQLSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    batch_max: int = Field(1000, ge=1, description="Samples handled per batch at most")
    batch_within_s: float = Field(0.005, gt=0, description="Longest wait to fill a batch")
    store_batch_within_s: float = Field(0.5, gt=0, description="Same, for the store role "
                                        "(it writes each batch before acknowledging it)")
    fetch_max_wait_ms: int = Field(20, ge=1, le=5000, description="Longest a consumer fetch "
                                   "waits for data (the embedded broker always waits this long)")
    store_fetch_max_wait_ms: int = Field(
        500, ge=1, le=5000, description="Same, for the store role: it is not waited on, and "
        "fewer idle fetches leave the broker's CPU to the live path")
    data_dir: str = Field(".fleetdeck/streams", description="Faust data directory")
    @property
    def group_id(self) -> str:
        """Consumer group: the store role reads every message in a group of its own."""
        return f"{self.app_id}-{self.role}" if self.role in ("store", "control") \
            else self.app_id

    @property
    def does_live(self) -> bool:
        return self.role in ("all", "live")

    @property
    def does_store(self) -> bool:
        return self.role in ("all", "store")

    @property
    def does_control(self) -> bool:
        return self.role in ("all", "control")

    @property
    def does_metrics(self) -> bool:
        return self.does_live or self.does_store

    web_port: int = Field(0, ge=0, description="Faust web port (0: web server off)")
