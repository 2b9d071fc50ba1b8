"""PING: proves the agent is there, verifies commands and answers."""

from __future__ import annotations

import asyncio
import platform
import time
from typing import Any

from agent.ops.base import Report
from schemas.commands import Command, PingParams


async def handle(command: Command, report: Report) -> dict[str, Any]:
    params = command.params
    assert isinstance(params, PingParams)  # the registry routes PING here only
    if params.delay_ms:
        await report(0.0, f"waiting {params.delay_ms} ms")
        await asyncio.sleep(params.delay_ms / 1000)
    return {"pong": params.payload, "agent_time": time.time(), "host": platform.node()}
