"""What every handler shares: its error and the progress callback type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

#: report(fraction 0..1, message) streams progress to the control plane
Report = Callable[[float, str], Awaitable[None]]


class OpsError(Exception):
    """A command failed for a reason the operator should read (the message is reported)."""
