"""Helpers shared by the benchmarks: stack startup, percentiles, the JSON result line."""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from fleetdeck.settings import StackSettings
from fleetdeck.stack import EmbeddedStack, Endpoints

console = Console(stderr=True)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def result(data: dict[str, Any]) -> None:
    """Print the one JSON object that ends every bench's output."""
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in data.items()}),
          flush=True)


class CpuMeter:
    """CPU used by named processes over a window, in % of one core (psutil)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    @property
    def started(self) -> bool:
        return self._t0 > 0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {name: self._used(name) for name in self.procs}

    def stop(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        return {name: round((self._used(name) - self._start.get(name, 0.0)) / elapsed * 100, 1)
                for name in self.procs}

    def _used(self, name: str) -> float:
        try:
            times = self.procs[name].cpu_times()
        except psutil.Error:  # exited: its last reading stands
            return self._start.get(name, 0.0)
        return float(times.user + times.system)


@contextmanager
def embedded(parts: Sequence[str], data_dir: Path | None = None,
             prefix: str = "bench:") -> Iterator[EmbeddedStack]:
    """Start the named parts of the embedded stack on free ports; stop them afterwards."""
    with tempfile.TemporaryDirectory(prefix="fleetdeck-bench-") as tmp:
        settings = StackSettings(data_dir=data_dir or Path(tmp), kafka_port=0, vm_port=0,
                                 ui_port=0, redis_prefix=prefix)
        stack = EmbeddedStack(settings)
        try:
            with console.status("starting the embedded stack…"):
                if "kafka" in parts:
                    stack.start_kafka()
                if "vm" in parts:
                    stack.start_vm()
                stack.start_redis()
                if "streams" in parts:
                    stack.start_streams()
                if "ui" in parts:
                    stack.start_ui()
                    stack.endpoints.api_token = asyncio.run(
                        api_token(stack.endpoints.sql_url, "default", "admin", "bench"))
            yield stack
        finally:
            stack.stop()
            _drop_keys(stack.endpoints)


def _drop_keys(endpoints: Endpoints) -> None:
    """Remove the bench's keys from Redis (it may be the machine's shared one)."""
    import redis

    if not endpoints.redis_url:
        return
    client = redis.Redis.from_url(endpoints.redis_url)
    try:
        for key in client.scan_iter(f"{endpoints.redis_prefix}*", count=1000):
            client.delete(key)
    except redis.RedisError as exc:
        console.print(f"could not remove bench keys from Redis: {exc}")
    finally:
        client.close()


def given(kafka: str | None, ui_url: str | None, vm_url: str | None, redis_url: str | None,
          prefix: str, token: str | None = None, *, broker: bool = True) -> Endpoints | None:
    """Endpoints of running services when the user named them all; None when they named
    none (the bench starts the embedded stack). Some but not all is a usage error: measuring
    the embedded stack instead would look like a measurement of theirs. ``broker``: the
    bench needs the broker (``--kafka``), else VictoriaMetrics (``--vm-url``)."""
    import typer

    store = ("--kafka", kafka) if broker else ("--vm-url", vm_url)
    named = dict([("--ui-url", ui_url), ("--redis-url", redis_url), store])
    if not any(named.values()) and not token:
        return None
    missing = [name for name, value in named.items() if not value]
    if missing:
        raise typer.BadParameter(f"a running stack needs {', '.join(missing)} as well (or "
                                 "none of the service options, to measure the embedded stack)")
    return Endpoints(kafka=kafka or "", vm_url=vm_url or "", redis_url=redis_url or "",
                     redis_prefix=prefix, ui_url=ui_url or "", api_token=token or "")


async def api_token(sql_url: str, tenant: str, role: str, name: str) -> str:
    """A fresh API token of ``tenant`` with ``role`` in the stack's SQL store (the tenant is
    created if missing), valid for a day: what a bench acts with on an embedded stack."""
    from connectors.sql import SQLSettings, SQLStore
    from schemas.identity import Role
    from ui.auth import new_token

    sql = SQLStore(SQLSettings(url=sql_url))
    try:
        await sql.migrate()
        await sql.create_tenant(tenant, tenant)
        text, record = new_token(tenant, Role(role), name, "fleetdeck-bench", timedelta(days=1))
        await sql.create_token(record)
    finally:
        await sql.close()
    return text
