"""The ``fleetdeck`` command line."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from fleetdeck import logs, runtime
from schemas.envelope import ID_PATTERN

app = typer.Typer(help="FleetDeck: a control plane for fleets of Linux servers.",
                  no_args_is_help=True, add_completion=False)
schemas_app = typer.Typer(help="Message schemas for integrators.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks; each prints one JSON object on its last line.",
                        no_args_is_help=True)
agent_app = typer.Typer()
app.add_typer(agent_app, name="agent")
app.add_typer(schemas_app, name="schemas")
app.add_typer(bench_app, name="bench")

LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error")]
LogFormat = Annotated[str, typer.Option("--log-format", help="json or text")]


def _check_logging(level: str, fmt: str = "json") -> None:
    if level.lower() not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter("must be debug, info, warning or error",
                                 param_hint="--log-level")
    if fmt not in ("json", "text"):
        raise typer.BadParameter("must be json or text", param_hint="--log-format")


@app.command()
def up(
    simulate: Annotated[int, typer.Option(min=0, max=5000,
                                          help="Also run N simulated servers")] = 0,
    data_dir: Annotated[Path, typer.Option(help="Where data and logs live")] = Path(".fleetdeck"),
    ui_port: Annotated[int, typer.Option(min=0, max=65535, help="Dashboard port")] = 8000,
    watch: Annotated[list[str] | None, typer.Option(help="Process name the local agent "
                                                    "watches (repeatable)")] = None,
) -> None:
    """Start the whole embedded stack and show its status until Ctrl-C."""
    from fleetdeck.settings import StackSettings
    from fleetdeck.up import run_up

    logs.configure("warning", "text")
    settings = StackSettings(data_dir=data_dir, ui_port=ui_port)
    raise typer.Exit(run_up(settings, simulate=simulate, watch=watch or []))


@agent_app.callback(invoke_without_command=True)
def agent(
    ctx: typer.Context,
    simulate: Annotated[int, typer.Option(min=0, max=20000,
                                          help="Run N synthetic servers too")] = 0,
    local: Annotated[bool, typer.Option(help="Sample this machine")] = True,
    watch: Annotated[list[str] | None, typer.Option(help="Process name to watch "
                                                    "(repeatable)")] = None,
    interval: Annotated[float | None, typer.Option(min=0.1, help="Seconds between samples")]
    = None,
    seconds: Annotated[float | None, typer.Option(min=1, help="Stop after this long")] = None,
    log_level: LogLevel = "info", log_format: LogFormat = "json",
) -> None:
    """Sample this machine (and/or simulated servers) and publish to Kafka.

    Once enrolled (`fleetdeck agent enroll`) it also takes signed commands.
    """
    if ctx.invoked_subcommand is not None:
        return
    _check_logging(log_level, log_format)
    from agent.main import run

    logs.configure(log_level, log_format)
    if not local and not simulate:
        raise typer.BadParameter("nothing to sample: give --simulate N or drop --no-local")
    runtime.settle_heap()
    asyncio.run(run(simulate=simulate, local=local, watch=watch, interval=interval,
                    seconds=seconds))


@agent_app.command("enroll")
def agent_enroll(
    url: Annotated[str, typer.Option(help="The control plane, e.g. https://fleet.example.com")],
    token: Annotated[str, typer.Option(help="One-time enrollment token (fde_…)",
                                       envvar="FLEETDECK_ENROLL_TOKEN")],
    server_id: Annotated[str | None, typer.Option(
        help="Enroll as this server id (default: FLEETDECK_AGENT_SERVER_ID, else the control "
        "plane takes the host name)")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        help="Where the pin and enrollment go (default: FLEETDECK_AGENT_STATE_DIR or "
        ".fleetdeck/agent)")] = None,
    force: Annotated[bool, typer.Option("--force", help="Enroll again, replacing the "
                                        "pinned control-plane key")] = False,
) -> None:
    """Enroll this agent: get its server id and tenant, and pin the control plane's key."""
    from agent.enroll import EnrollError, enroll, plain_http_risk
    from agent.settings import AgentSettings

    if server_id is not None and not re.fullmatch(ID_PATTERN, server_id):
        raise typer.BadParameter("letters, digits and . _ : - (at most 128)",
                                 param_hint="--server-id")
    settings = AgentSettings() if state_dir is None else AgentSettings(state_dir=state_dir)
    if plain_http_risk(url):
        typer.echo("fleetdeck: warning: the key is fetched over plain HTTP from another "
                   "machine; use https:// unless the network path is trusted", err=True)
    try:
        done = enroll(url, token, settings, server_id=server_id, force=force)
    except EnrollError as exc:
        typer.echo(f"fleetdeck: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"enrolled as server {done.server_id} in tenant {done.tenant}; pinned "
               f"control-plane key {done.key_id} in {settings.state_dir}")


@app.command()
def streams(
    data_dir: Annotated[Path | None, typer.Option(
        help="Faust data directory [default: FLEETDECK_DATA_DIR or .fleetdeck/streams]")] = None,
    role: Annotated[str | None, typer.Option(
        help="live (health, alerts, Redis, dead letters), store (VictoriaMetrics, rollups, "
        "alert history, notifications), control (commands, audit log) or all "
        "[default: FLEETDECK_ROLE or all]")] = None,
    log_level: LogLevel = "info",
) -> None:
    """Run the Faust stream worker (live fan-out, storage, rollups, health)."""
    _check_logging(log_level)
    from streams.app import run
    from streams.settings import StreamsSettings

    logs.configure(log_level, "json")
    overrides = {} if data_dir is None else {"data_dir": str(data_dir)}
    if role is not None:
        if role not in ("live", "store", "control", "all"):
            raise typer.BadParameter("must be live, store, control or all", param_hint="--role")
        overrides["role"] = role
    runtime.settle_heap()
    run(StreamsSettings(**overrides), loglevel=log_level)  # type: ignore[arg-type]


@app.command()
def ui(
    host: Annotated[str | None, typer.Option(
        help="Address to listen on [default: FLEETDECK_HOST or 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(
        min=1, max=65535, help="Port to listen on [default: FLEETDECK_PORT or 8000]")] = None,
    log_level: LogLevel = "info",
) -> None:
    """Serve the dashboard, JSON API and SSE stream."""
    _check_logging(log_level)
    import uvicorn

    from ui.app import create_app
    from ui.settings import UISettings

    logs.configure(log_level, "json")
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = UISettings(**overrides)  # type: ignore[arg-type]
    served = create_app(settings)
    runtime.settle_heap()
    uvicorn.run(served, host=settings.host, port=settings.port, log_config=None,
                access_log=False, log_level=log_level)


@schemas_app.command("export")
def schemas_export(directory: Annotated[Path, typer.Argument(help="Output directory")]) -> None:
    """Write the JSON Schema of every message to DIRECTORY."""
    from schemas.export import export

    try:
        written = export(directory)
    except OSError as exc:
        typer.echo(f"fleetdeck: cannot write schemas to {directory}: {exc.strerror or exc}",
                   err=True)
        raise typer.Exit(1) from None
    for path in written:
        typer.echo(str(path))


def main() -> None:
    from pydantic import ValidationError

    # The agent runs on every server for ever, so its process loads only what it uses: the
    # admin commands (rich tables, the SQL settings) and the benches are left out of it.
    if sys.argv[1:2] != ["agent"]:
        from fleetdeck import admin, bench

        admin.register(app)
        bench.register(bench_app)
    try:
        app()
    except ValidationError as exc:  # settings from FLEETDECK_* variables or options
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
                             for e in exc.errors())
        typer.echo(f"fleetdeck: invalid setting ({exc.title}): {problems}", err=True)
        raise SystemExit(2) from None
