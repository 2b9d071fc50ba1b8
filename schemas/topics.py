"""Kafka topic names with their partition counts, and Redis key names.

One module so that producers, processors and integrators agree on every name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    description: str


METRICS = Topic("fd.metrics", 8, "Metric samples from agents, key = server id")
HEALTH = Topic("fd.health", 4, "Health changes per server, key = server id")
DEAD_LETTER = Topic("fd.dead-letter", 1, "Messages that failed validation, with a reason")
ALERTS = Topic("fd.alerts", 4, "Alert transitions, key = server id")
ALERT_ACTIONS = Topic("fd.alert-actions", METRICS.partitions, "Acknowledgements of alerts, "
                      "key = server id (co-partitioned with fd.metrics: one worker owns both)")
COMMANDS = Topic("fd.commands", 8, "Signed commands to agents, key = server id")
COMMAND_EVENTS = Topic("fd.command-events", 8, "ACK, progress and results from agents")
AUDIT = Topic("fd.audit", 1, "Audit events (one partition keeps the hash chain ordered)")

ALL_TOPICS: tuple[Topic, ...] = (METRICS, HEALTH, DEAD_LETTER, ALERTS, ALERT_ACTIONS, COMMANDS,
                                 COMMAND_EVENTS, AUDIT)


@dataclass(frozen=True)
class RedisKeys:
    """Redis key names under a prefix (``fd:`` by default; tests use one prefix each)."""

    prefix: str = "fd:"

    @property
    def fleet_stream(self) -> str:
        """Stream of compact summaries of every sample and every health change."""
        return f"{self.prefix}live:fleet"

    def server_stream(self, server_id: str) -> str:
        """Stream of full samples and health changes of one server."""
        return f"{self.prefix}live:server:{server_id}"

    @property
    def servers(self) -> str:
        """Hash server id -> JSON summary of its latest sample and health."""
        return f"{self.prefix}servers"

    @property
    def counters(self) -> str:
        """Hash of pipeline counters (dead letters, VictoriaMetrics writes, ...)."""
        return f"{self.prefix}counters"

    @property
    def alerts_stream(self) -> str:
        """Stream of every alert event (the alert panel's SSE)."""
        return f"{self.prefix}live:alerts"

    @property
    def alerts(self) -> str:
        """Hash alert id -> JSON of the alert's newest event (what the panel shows)."""
        return f"{self.prefix}alerts"

    @property
    def rules_version(self) -> str:
        """Counter raised whenever rules or silences change; workers reload on a change."""
        return f"{self.prefix}alerts:version"

    @property
    def commands_stream(self) -> str:
        """Stream of every command status change (the commands pages' SSE, the bench)."""
        return f"{self.prefix}live:commands"
