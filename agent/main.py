"""Entry point of ``fleetdeck agent``."""

from __future__ import annotations

import asyncio
import logging
import signal

from agent.runner import Agent, Source
from agent.settings import AgentSettings

log = logging.getLogger(__name__)


def build_sources(settings: AgentSettings, *, simulate: int, local: bool) -> list[Source]:
    from agent.simulate import SimulatedServer

    sources: list[Source] = []
    if local:
        from agent.collectors import Sampler

        sources.append(Sampler(server_id=settings.server_id, tenant=settings.tenant,
                               hostname=settings.hostname, watch=settings.watch,
                               interval_s=settings.interval_s))
    sources.extend(SimulatedServer(i, tenant=settings.tenant) for i in range(simulate))
    return sources


async def run(*, simulate: int = 0, local: bool = True, watch: list[str] | None = None,
              interval: float | None = None, seconds: float | None = None) -> None:
    overrides: dict[str, object] = {}
    if watch:
        overrides["watch"] = watch
    if interval is not None:
        overrides["interval_s"] = interval
    settings = AgentSettings(**overrides)  # type: ignore[arg-type]
    agent = Agent(settings, build_sources(settings, simulate=simulate, local=local))
    log.info("agent started", extra={"server_id": settings.server_id, "simulated": simulate,
                                     "broker": settings.kafka.bootstrap_servers})
    sampling = asyncio.create_task(agent.run(seconds))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # stop sampling, then try to send the rest
        loop.add_signal_handler(signum, sampling.cancel)
    try:
        try:
            await sampling
        except asyncio.CancelledError:
            log.info("agent stopping; sending what is spooled")
        if len(agent.spool) and not await agent.flush(timeout=30 if seconds else 5):
            log.warning("stopping with %d samples unsent", len(agent.spool))
    finally:
        log.info("agent stopped", extra={"samples": agent.samples, "sent": agent.publisher.sent,
                                         "unsent": len(agent.spool),
                                         "dropped": agent.spool.dropped})
