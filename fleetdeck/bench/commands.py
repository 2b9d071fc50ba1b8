"""The ``fleetdeck bench`` sub-commands. Each starts the embedded stack it needs unless
pointed at running services, and prints one JSON object on its last line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from fleetdeck.bench import common

Kafka = Annotated[str | None, typer.Option(help="Running broker host:port")]
UIUrl = Annotated[str | None, typer.Option(help="Running UI base URL")]
VMUrl = Annotated[str | None, typer.Option(help="Running VictoriaMetrics URL")]
RedisUrl = Annotated[str | None, typer.Option(help="Running Redis URL")]
Prefix = Annotated[str, typer.Option(help="Redis key prefix of the running stack")]
Token = Annotated[str | None, typer.Option(help="API token (fdt_…) for the running UI; the "
                                           "embedded stack makes its own")]


def live(
    agents: Annotated[int, typer.Option(min=1, max=20000, help="Simulated agents")] = 1000,
    seconds: Annotated[float, typer.Option(min=5, help="Seconds of load measured")] = 60,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of load before measuring "
                                          "latency (still counted for lost)")] = 5,
    kafka: Kafka = None, ui_url: UIUrl = None, redis_url: RedisUrl = None,
    redis_prefix: Prefix = "fd:", token: Token = None,
) -> None:
    """Latency from sample taken to SSE event received, with N agents at 1 Hz."""
    from fleetdeck.bench.live import measure

    endpoints = common.given(kafka, ui_url, None, redis_url, redis_prefix, token)
    if endpoints is not None:
        common.result(asyncio.run(measure(endpoints, agents, seconds, warmup)))
        return
    with common.embedded(["kafka", "vm", "streams", "ui"], prefix="bench-live:") as stack:
        pids = {s.name: s.pid for s in stack.supervisor.services if s.pid is not None}
        common.result(asyncio.run(measure(stack.endpoints, agents, seconds, warmup, pids)))


def query(
    servers: Annotated[int, typer.Option(min=1, max=10000, help="Servers to fill")] = 1000,
    range_: Annotated[str, typer.Option("--range", help="Range to fill and query")] = "1h",
    requests: Annotated[int, typer.Option(min=10, help="Query pairs to time")] = 300,
    vm_url: VMUrl = None, ui_url: UIUrl = None, redis_url: RedisUrl = None,
    redis_prefix: Prefix = "fd:", token: Token = None,
) -> None:
    """P95 of /api/v1/servers/{id}/series against the same query sent to VictoriaMetrics."""
    from fleetdeck.bench.query import run

    endpoints = common.given(None, ui_url, vm_url, redis_url, redis_prefix, token,
                             broker=False)
    if endpoints is not None:
        common.result(run(endpoints, servers, range_, requests))
        return
    with common.embedded(["vm", "ui"], prefix="bench-query:") as stack:
        common.result(run(stack.endpoints, servers, range_, requests))


def agent(
    seconds: Annotated[float, typer.Option(min=5, help="Seconds to measure")] = 60,
    watch: Annotated[list[str] | None, typer.Option(help="Process names to watch")] = None,
    kafka: Kafka = None,
) -> None:
    """CPU (% of one core) and RSS of the real agent sampling this machine at 1 Hz."""
    from fleetdeck.bench.agent import run
    from fleetdeck.stack import Endpoints

    if kafka:
        common.result(run(Endpoints(kafka=kafka), seconds, watch=watch))
        return
    with common.embedded(["kafka"], prefix="bench-agent:") as stack:
        common.result(run(stack.endpoints, seconds, watch=watch))


def alerts(
    agents: Annotated[int, typer.Option(min=1, max=20000, help="Simulated agents")] = 1000,
    seconds: Annotated[float, typer.Option(min=10, help="Seconds of threshold crossings")] = 60,
    for_s: Annotated[float, typer.Option("--for", min=0, help="The rule's for duration (s)")] = 2,
    per_second: Annotated[float, typer.Option(min=0.1, help="Servers pushed across the "
                                              "threshold per second")] = 5,
    kafka: Kafka = None, ui_url: UIUrl = None, redis_url: RedisUrl = None,
    redis_prefix: Prefix = "fd:", token: Token = None,
) -> None:
    """Latency from the sample that completes a rule's `for` duration to the firing event
    on /api/v1/alerts/stream; counts expected, fired and duplicate firings."""
    from fleetdeck.bench.alerts import measure

    endpoints = common.given(kafka, ui_url, None, redis_url, redis_prefix, token)
    if endpoints is not None:
        common.result(asyncio.run(measure(endpoints, agents, seconds, for_s, per_second)))
        return
    with common.embedded(["kafka", "vm", "streams", "ui"], prefix="bench-alerts:") as stack:
        pids = {s.name: s.pid for s in stack.supervisor.services if s.pid is not None}
        common.result(asyncio.run(measure(stack.endpoints, agents, seconds, for_s, per_second,
                                          pids=pids)))


def dispatch(
    agents: Annotated[int, typer.Option(min=1, max=20000, help="Simulated agents (metrics "
                                        "at 1 Hz; one command listener for all)")] = 1000,
    commands: Annotated[int, typer.Option(min=1, help="PING commands to send")] = 2000,
    rate: Annotated[float, typer.Option(min=0.1, help="Commands sent per second")] = 50,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight at "
                                             "most")] = 16,
    drain: Annotated[float, typer.Option(min=1, help="Seconds to wait for the last ACKs")] = 30,
    tenant: Annotated[str, typer.Option(help="Tenant of the simulated servers (the token's "
                                        "tenant)")] = "default",
    control_key: Annotated[str | None, typer.Option(help="PEM file of the running control "
                                                    "plane's public key, for the agents")] = None,
    kafka: Kafka = None, ui_url: UIUrl = None, redis_url: RedisUrl = None,
    redis_prefix: Prefix = "fd:", token: Token = None,
) -> None:
    """Latency from a command accepted by POST /api/v1/commands to its agent's ACK recorded
    by the control plane (seen on /api/v1/commands/stream), with N agents at 1 Hz."""
    import httpx

    from fleetdeck.admin import check_id
    from fleetdeck.bench.dispatch import BenchError, measure

    check_id(tenant, "tenant")
    endpoints = common.given(kafka, ui_url, None, redis_url, redis_prefix, token)
    if endpoints is not None:
        if not token or not control_key:
            raise typer.BadParameter("a running stack needs --token (operator role or "
                                     "higher) and --control-key")
        _check_control_key(control_key)
    try:
        if endpoints is not None:
            common.result(asyncio.run(measure(
                endpoints, agents, commands, rate=rate, concurrency=concurrency,
                drain_s=drain, tenant=tenant, control_key=control_key or "")))
            return
        with common.embedded(["kafka", "vm", "streams", "ui"], prefix="bench-dispatch:") as stack:
            pids = {s.name: s.pid for s in stack.supervisor.services if s.pid is not None}
            common.result(asyncio.run(measure(
                stack.endpoints, agents, commands, rate=rate, concurrency=concurrency,
                drain_s=drain, tenant=tenant, pids=pids)))
    except (BenchError, httpx.HTTPError) as exc:
        common.console.print(f"bench dispatch: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None


def _check_control_key(path: str) -> None:
    """A usage error unless ``path`` holds the control plane's Ed25519 public key (PEM)."""
    from connectors.keystore import KeyStoreError, load_public

    try:
        load_public(Path(path).read_bytes())
    except (OSError, KeyStoreError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--control-key") from None


def register(app: typer.Typer) -> None:
    app.command()(live)
    app.command()(alerts)
    app.command()(dispatch)
    app.command()(query)
    app.command()(agent)
