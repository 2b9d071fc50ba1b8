"""``fleetdeck bench live``: sample taken → SSE event received, through the whole pipeline.

Simulated agents run in their own process (``fleetdeck agent --no-local --simulate N``);
this process reads ``/api/v1/stream`` and times every sample event against the time the
sample was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from typing import IO, Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from rich.progress import Progress

from fleetdeck.bench.common import CpuMeter, console, percentile
from fleetdeck.stack import Endpoints
from schemas import CpuStats, MemoryStats, MetricSample


async def wait_until_flowing(endpoints: Endpoints, timeout: float = 120) -> None:
    """Send probe samples until one comes out of the SSE stream (worker joined, all ready)."""
    arrived = asyncio.Event()

    async def watch(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/api/v1/stream") as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data:") and "bench-probe" in line:
                    arrived.set()
                    return

    producer = AIOKafkaProducer(bootstrap_servers=endpoints.kafka)
    await producer.start()
    try:
        async with httpx.AsyncClient(base_url=endpoints.ui_url, timeout=None,
                                     headers=endpoints.auth()) as client:
            watcher = asyncio.create_task(watch(client))
            try:
                async with asyncio.timeout(timeout):
                    while not arrived.is_set():
                        await producer.send_and_wait("fd.metrics", _probe(), key=b"bench-probe")
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(arrived.wait(), 1.0)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
    finally:
        await producer.stop()


def _probe() -> bytes:
    return MetricSample(server_id="bench-probe", hostname="bench-probe", cpu=CpuStats(total=1),
                        memory=MemoryStats(total_bytes=1, used_bytes=0, available_bytes=1,
                                           used_pct=0)).model_dump_json().encode()


def agent_process(endpoints: Endpoints, agents: int, seconds: float,
                  log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    """Simulated agents in their own process; their log goes to ``log_file``."""
    return subprocess.Popen(
        [sys.executable, "-m", "fleetdeck", "agent", "--no-local", "--simulate", str(agents),
         "--seconds", str(seconds), "--log-level", "info"],
        stdout=subprocess.DEVNULL, stderr=log_file, env={**os.environ, **endpoints.env()})


def agent_totals(stderr: bytes) -> dict[str, Any]:
    for line in reversed(stderr.decode(errors="replace").splitlines()):
        if '"agent stopped"' in line:
            return dict(json.loads(line))
    raise RuntimeError("the agent process did not report its totals:\n" + stderr.decode()[-2000:])


async def measure(endpoints: Endpoints, agents: int, seconds: float,
                  warmup: float = 5.0, pids: dict[str, int] | None = None) -> dict[str, Any]:
    """Time every sample; latencies of the first ``warmup`` seconds (caches filling, first
    health evaluation of every server) are left out of the percentiles, not out of ``lost``.

    ``pids`` (the stack's processes) get their CPU use over the measured seconds reported,
    with the simulated agents' and this client's."""
    await wait_until_flowing(endpoints)
    latencies: list[float] = []
    stages: list[float] = []  # sample taken → entry added to the Redis stream (its id's time)
    seen: set[tuple[str, str]] = set()
    started = time.time()
    agent_log = tempfile.TemporaryFile()
    proc = agent_process(endpoints, agents, seconds + warmup, agent_log)
    meter = CpuMeter({**(pids or {}), "agents": proc.pid, "bench-client": os.getpid()})
    cpu: dict[str, float] = {}
    with Progress(console=console, transient=True) as progress:
        total = seconds + warmup
        task = progress.add_task(f"{agents} agents for {total:.0f} s", total=total)
        async with httpx.AsyncClient(base_url=endpoints.ui_url, timeout=None,
                                     headers=endpoints.auth()) as client:
            reader = asyncio.create_task(_read(client, latencies, stages, seen, started + warmup))
            while proc.poll() is None:
                await asyncio.sleep(0.5)
                progress.update(task, completed=min(total, time.time() - started))
                if not meter.started and time.time() >= started + warmup:
                    meter.start()
                elif not cpu and time.time() >= started + total - 1:
                    cpu = meter.stop()
            agent_log.seek(0)
            totals = agent_totals(agent_log.read())
            agent_log.close()
            deadline = time.time() + 15  # let the tail of the run drain through
            while len(seen) < totals["samples"] and time.time() < deadline:
                await asyncio.sleep(0.2)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    sent, received = int(totals["samples"]), len(seen)  # every sample taken must arrive
    return {"bench": "live", "agents": agents, "seconds": seconds, "warmup_s": warmup,
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99), "max_ms": max(latencies, default=0.0),
            "to_redis_p50_ms": percentile(stages, 50), "to_redis_p95_ms": percentile(stages, 95),
            "sent": sent, "received": received, "lost": max(0, sent - received),
            "cpu_pct_of_core": cpu}


async def _read(client: httpx.AsyncClient, latencies: list[float], stages: list[float],
                seen: set[tuple[str, str]], measure_from: float) -> None:
    async with client.stream("GET", "/api/v1/stream") as resp:
        event = ""
        entry_ms = 0.0
        async for line in resp.aiter_lines():
            if line.startswith("id:"):
                entry_ms = float(line[3:].strip().split("-")[0])
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "sample":
                now = time.time()
                data = orjson.loads(line[5:])
                if data["server_id"] == "bench-probe":
                    continue
                key = (data["server_id"], data["ts"])
                if key not in seen:
                    seen.add(key)
                    taken = datetime.fromisoformat(data["ts"]).timestamp()
                    if taken >= measure_from:
                        latencies.append((now - taken) * 1000)
                        stages.append(entry_ms - taken * 1000)
