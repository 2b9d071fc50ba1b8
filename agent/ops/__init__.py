"""Command handlers, one module per command family, in one explicit registry.

A handler is ``async def handler(command, report) -> dict``: it runs the command inside its
guards and returns the result (JSON-able); it raises :class:`OpsError` with a message an
operator can act on when the command fails. ``report(fraction, message)`` streams progress.
The executor applies the timeout; handlers need not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agent.ops import ping
from agent.ops.base import OpsError, Report
from schemas.commands import COMMAND_TYPES, Command

Handler = Callable[[Command, Report], Awaitable[dict[str, Any]]]

#: command type -> handler; every type in schemas.commands.COMMAND_TYPES needs one
HANDLERS: dict[str, Handler] = {
    "PING": ping.handle,
}

_missing = set(COMMAND_TYPES) - set(HANDLERS)
if _missing:  # a type the control plane can send but no agent could run
    raise RuntimeError(f"command types without a handler: {sorted(_missing)}")

__all__ = ["HANDLERS", "Handler", "OpsError", "Report"]
