"""Entry point of ``fleetdeck agent``."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from agent.enroll import apply_enrollment
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
    settings = apply_enrollment(AgentSettings(**overrides))  # type: ignore[arg-type]
    sources = build_sources(settings, simulate=simulate, local=local)
    agent = Agent(settings, sources)
    log.info("agent started", extra={"server_id": settings.server_id, "simulated": simulate,
                                     "broker": settings.kafka.bootstrap_servers})
    commands = start_commands(settings, {s.server_id: settings.tenant for s in sources})
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
        if commands is not None:
            await commands.stop()
        log.info("agent stopped", extra={"samples": agent.samples, "sent": agent.publisher.sent,
                                         "unsent": len(agent.spool),
                                         "dropped": agent.spool.dropped})


class Commands:
    """The command side of an agent: listener, executor and event sender, as one task."""

    def __init__(self, settings: AgentSettings, servers: dict[str, str], key_file: Path,
                 group_id: str) -> None:
        from agent.commands import CommandListener, EventSender
        from agent.executor import Executor, ReplayGuard
        from agent.ops import OpsContext
        from connectors.keystore import key_id, load_public

        public = load_public(key_file.read_bytes())
        self.sender = EventSender(settings.kafka)
        self.executor = Executor({key_id(public): public},
                                 ReplayGuard(settings.state_dir / "accepted-commands.log"),
                                 self.sender, context=OpsContext(settings),
                                 results_dir=settings.state_dir / "results")
        self.listener = CommandListener(settings.kafka, servers, self.executor,
                                        group_id=group_id,
                                        fetch_max_wait_ms=settings.commands_fetch_wait_ms)
        self.task = asyncio.create_task(self.listener.run(), name="agent-commands")

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.executor.stop()
        await self.sender.close()


def start_commands(settings: AgentSettings, servers: dict[str, str]) -> Commands | None:
    """Listen for commands when a control-plane key is pinned (else say why not)."""
    key_file = settings.control_key_file()
    if key_file is None:
        log.warning("commands disabled: no control-plane key pinned (enroll the agent or set "
                    "FLEETDECK_AGENT_CONTROL_KEY)")
        return None
    # One consumer group per agent: its own committed position, shared with nobody.
    group = "fd-agent-" + (settings.server_id if len(servers) == 1 else
                           f"sim-{settings.server_id}-{len(servers)}")
    from connectors.keystore import KeyStoreError

    try:
        return Commands(settings, servers, key_file, group)
    except (OSError, KeyStoreError) as exc:
        log.error("commands disabled: cannot load the control-plane key %s: %s", key_file, exc)
        return None
