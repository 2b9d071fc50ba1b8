"""Command handlers, one module per command family, in one explicit registry.

A handler is ``async def handler(command, report) -> dict``: it runs the command inside its
guards and returns the result (JSON-able); it raises :class:`OpsError` with a message an
operator can act on when the command fails. ``report(fraction, message)`` streams progress.
The executor applies the timeout; handlers need not.

Handlers that need the agent's configuration take it explicitly as their first argument,
``async def handler(context, command, report)``, and are registered with :func:`with_context`;
:func:`bind` turns the registry into plain handlers for one :class:`OpsContext` (the executor
calls it with the context built in ``main()``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from agent.ops import cron, files, ping
from agent.ops.base import OpsContext, OpsError, Report
from schemas.commands import COMMAND_TYPES, Command

Handler = Callable[[Command, Report], Awaitable[dict[str, Any]]]
ContextHandler = Callable[[OpsContext, Command, Report], Awaitable[dict[str, Any]]]
#: builds a type's handler for one agent's context
Factory = Callable[[OpsContext], Handler]


def plain(handler: Handler) -> Factory:
    """A handler that needs no context."""
    return lambda _context: handler


def with_context(handler: ContextHandler) -> Factory:
    """A handler that takes the context as its first argument."""
    return lambda context: functools.partial(handler, context)


#: command type -> factory of its handler; every type in schemas.commands.COMMAND_TYPES needs one
HANDLERS: dict[str, Factory] = {
    "PING": plain(ping.handle),
    "CRON_LIST": with_context(cron.list_entries),
    "CRON_CREATE": with_context(cron.create),
    "CRON_UPDATE": with_context(cron.update),
    "CRON_DELETE": with_context(cron.delete),
    "FILE_LIST": with_context(files.list_dir),
    "FILE_READ": with_context(files.read),
    "FILE_WRITE": with_context(files.write),
    "FILE_UPLOAD_CHUNK": with_context(files.upload_chunk),
    "FILE_MOVE": with_context(files.move),
    "FILE_DELETE": with_context(files.delete),
    "FILE_RESTORE": with_context(files.restore),
}


def bind(context: OpsContext) -> dict[str, Handler]:
    """Every handler, bound to ``context``."""
    return {name: factory(context) for name, factory in HANDLERS.items()}


_missing = set(COMMAND_TYPES) - set(HANDLERS)
if _missing:  # a type the control plane can send but no agent could run
    raise RuntimeError(f"command types without a handler: {sorted(_missing)}")

__all__ = ["HANDLERS", "ContextHandler", "Factory", "Handler", "OpsContext", "OpsError",
           "Report", "bind", "plain", "with_context"]
