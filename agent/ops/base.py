"""What every handler shares: its error, the progress callback type and the ops context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.settings import AgentSettings

#: report(fraction 0..1, message) streams progress to the control plane
Report = Callable[[float, str], Awaitable[None]]


class OpsError(Exception):
    """A command failed for a reason the operator should read (the message is reported)."""


@dataclass(frozen=True)
class OpsContext:
    """What a handler may need beyond its command, handed over explicitly (never a global):
    the agent's settings (sandbox roots, cron directory, policies...)."""

    settings: AgentSettings
