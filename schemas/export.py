"""JSON Schema export of every message, for integrators consuming the topics."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.alerts import AlertAction, AlertEvent
from schemas.audit import AuditEvent
from schemas.commands import Command, CommandEvent, SignedCommand
from schemas.deadletter import DeadLetter
from schemas.health import HealthChange
from schemas.metrics import MetricSample
from schemas.topics import (
    ALERT_ACTIONS,
    ALERTS,
    AUDIT,
    COMMAND_EVENTS,
    COMMANDS,
    DEAD_LETTER,
    HEALTH,
    METRICS,
)

#: message model -> topic it travels on
MESSAGES: dict[type[BaseModel], str] = {
    MetricSample: METRICS.name,
    HealthChange: HEALTH.name,
    DeadLetter: DEAD_LETTER.name,
    AlertEvent: ALERTS.name,
    AlertAction: ALERT_ACTIONS.name,
    SignedCommand: COMMANDS.name,
    # the signed JSON text inside SignedCommand.command: every command type's params
    Command: COMMANDS.name + " (SignedCommand.command)",
    CommandEvent: COMMAND_EVENTS.name,
    AuditEvent: AUDIT.name,
}


def export(directory: Path) -> list[Path]:
    """Write ``<Model>.schema.json`` for every message model; return the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model, topic in MESSAGES.items():
        schema = model.model_json_schema()
        schema["x-topic"] = topic
        path = directory / f"{model.__name__}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
