"""``fleetdeck up``: start everything, show a live status table, stop it all on Ctrl-C."""

from __future__ import annotations

import signal
import time
from types import FrameType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from fleetdeck.procs import StackError
from fleetdeck.settings import StackSettings
from fleetdeck.stack import EmbeddedStack

console = Console()


def _table(stack: EmbeddedStack) -> Table:
    table = Table(title="FleetDeck embedded stack", expand=False)
    for column in ("service", "status", "pid", "address", "restarts", "log"):
        table.add_column(column)
    for svc in stack.services:
        style = "green" if svc.status == "running" else "red"
        table.add_row(svc.name, f"[{style}]{svc.status}[/]", str(svc.pid or ""), svc.url,
                      str(svc.restarts), str(svc.log_path or ""))
    if not any(svc.name == "redis" for svc in stack.services):
        table.add_row("redis", "[green]already running[/]", "", stack.endpoints.redis_url, "",
                      f"keys {stack.endpoints.redis_prefix}*")
    return table


def run_up(settings: StackSettings, *, simulate: int, watch: list[str]) -> int:
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stack = EmbeddedStack(settings)
    try:
        with console.status("starting the embedded stack…"):
            stack.start_infra()
            admin, password = stack.ensure_admin()
            stack.start_streams()
            stack.start_ui()
            stack.start_agent(watch=watch)
            if simulate:
                stack.start_agent(simulate=simulate, local=False)
        console.print(f"\n[bold]Dashboard:[/] {stack.endpoints.ui_url}   (Ctrl-C stops everything)")
        where = stack.data_dir / "admin-password"
        console.print(f"[bold]Sign in:[/] {stack.endpoints.ui_url}/login as [bold]{admin}[/] "
                      + (f"with password [bold]{password}[/] (also in {where})" if password
                         else f"(password in {where})"))
        if not console.is_terminal:  # no live redraw in a log file: print the table once
            console.width = 200
            console.print(_table(stack))
        with Live(_table(stack), console=console, refresh_per_second=1) as live:
            while not stopping:
                time.sleep(1)
                stack.supervisor.restart_exited()  # the broker's topics are made again
                live.update(_table(stack))
    except StackError as exc:
        console.print(f"[red]cannot start: {exc}[/]")
        return 1
    except KeyboardInterrupt:
        console.print("Ctrl-C: stopping")  # the normal way to end it
    finally:
        with console.status("stopping…"):
            stack.stop()
        console.print("stopped every process FleetDeck started")
    return 0
