"""``fleetdeck bench alerts``: threshold crossed → firing event on the alert SSE stream.

A driver process runs N steady simulated agents at 1 Hz (their CPU stays below 65 %) and,
on a schedule, pins servers to critical CPU (≥ 97 %) for a while, each server at most
once. The bench process installs a rule ``cpu.total > 96 for <for>`` for the simulated
servers and reads ``/api/v1/alerts/stream``. A firing event carries the time of the sample
that completed the rule's ``for`` duration, so ``receipt - event.ts`` is the latency asked
for. ``expected`` = servers the driver pinned; ``fired`` = those with a firing event;
``duplicates`` = firing events beyond one per pinned server (or for servers never pinned).
"""

from __future__ import annotations

import argparse
import asyncio
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
from rich.progress import Progress

from fleetdeck.bench.common import CpuMeter, console, percentile
from fleetdeck.bench.live import wait_until_flowing
from fleetdeck.stack import Endpoints

RULE_ID = "bench-alerts"


async def measure(endpoints: Endpoints, agents: int, seconds: float, for_s: float = 2.0,
                  per_second: float = 5.0, warmup: float = 5.0,
                  pids: dict[str, int] | None = None) -> dict[str, Any]:
    await wait_until_flowing(endpoints)
    firing: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=endpoints.ui_url, timeout=None,
                                     headers=endpoints.auth()) as client:
        rule = {"id": RULE_ID, "name": "Bench CPU", "expr": f"cpu.total > 96 for {for_s}s",
                "clear": 50, "severity": "critical",
                "match": [{"label": "server_id", "op": "=~", "value": "sim-.*"}]}
        resp = await client.put(f"/api/v1/alerts/rules/{RULE_ID}", json=rule)
        resp.raise_for_status()
        await asyncio.sleep(2)  # workers pick the rule up within a second
        reader = asyncio.create_task(_read(client, firing))
        log = tempfile.TemporaryFile()
        proc = _driver(endpoints, agents, seconds + warmup, warmup, per_second, for_s, log)
        meter = CpuMeter({**(pids or {}), "agents": proc.pid, "bench-client": os.getpid()})
        cpu: dict[str, float] = {}
        started = time.time()
        with Progress(console=console, transient=True) as progress:
            total = seconds + warmup
            task = progress.add_task(f"{agents} agents, crossings for {seconds:.0f} s",
                                     total=total)
            while proc.poll() is None:
                await asyncio.sleep(0.5)
                progress.update(task, completed=min(total, time.time() - started))
                if not meter.started and time.time() >= started + warmup:
                    meter.start()
                elif not cpu and time.time() >= started + total - 1:
                    cpu = meter.stop()
        log.seek(0)
        plan = _plan(log)
        deadline = time.time() + for_s + 15  # the last crossings still fire
        while time.time() < deadline and len({e["server_id"] for e in firing}
                                              & plan.keys()) < len(plan):
            await asyncio.sleep(0.2)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await client.delete(f"/api/v1/alerts/rules/{RULE_ID}")
    per_server: dict[str, int] = {}
    latencies, to_redis = [], []
    for event in firing:
        per_server[event["server_id"]] = per_server.get(event["server_id"], 0) + 1
        if event["server_id"] in plan:
            latencies.append(event["latency_ms"])
            to_redis.append(event["to_redis_ms"])
    fired = sum(1 for server in plan if per_server.get(server))
    duplicates = sum(n - 1 for s, n in per_server.items() if s in plan) + sum(
        n for s, n in per_server.items() if s not in plan)
    return {"bench": "alerts", "agents": agents, "seconds": seconds, "for_s": for_s,
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99), "max_ms": max(latencies, default=0.0),
            "to_redis_p50_ms": percentile(to_redis, 50),
            "to_redis_p95_ms": percentile(to_redis, 95),
            "expected": len(plan), "fired": fired, "duplicates": duplicates,
            "cpu_pct_of_core": cpu}


async def _read(client: httpx.AsyncClient, firing: list[dict[str, Any]]) -> None:
    seen: set[tuple[str, int]] = set()
    async with client.stream("GET", "/api/v1/alerts/stream") as resp:
        event, entry_ms = "", 0.0
        async for line in resp.aiter_lines():
            if line.startswith("id:"):
                entry_ms = float(line[3:].strip().split("-")[0])
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "alert":
                now = time.time()
                data = orjson.loads(line[5:])
                if data["rule_id"] != RULE_ID or data["transition"] != "firing":
                    continue
                key = (data["alert_id"], data["seq"])
                if key in seen:  # the same event twice would be a stream bug, not a duplicate
                    continue
                seen.add(key)
                taken = datetime.fromisoformat(data["ts"]).timestamp()
                firing.append({"server_id": data["server_id"],
                               "latency_ms": (now - taken) * 1000,
                               "to_redis_ms": entry_ms - taken * 1000})


def _driver(endpoints: Endpoints, agents: int, seconds: float, warmup: float,
            per_second: float, for_s: float, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fleetdeck.bench.alerts", "--agents", str(agents),
         "--seconds", str(seconds), "--warmup", str(warmup), "--per-second", str(per_second),
         "--hold", str(for_s + 4)],
        stdout=log, stderr=subprocess.DEVNULL, env={**os.environ, **endpoints.env()})


def _plan(log: IO[bytes]) -> dict[str, float]:
    plan = {}
    for line in log.read().decode(errors="replace").splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            plan[item["server_id"]] = item["at"]
    return plan


async def _drive(agents: int, seconds: float, warmup: float, per_second: float,
                 hold: float) -> None:
    """The driver: agents at 1 Hz; after ``warmup``, pin ``per_second`` servers a second
    to critical for ``hold`` seconds, each server once; print each pin as JSON."""
    from agent.runner import Agent
    from agent.settings import AgentSettings
    from agent.simulate import SimulatedServer

    sims = [SimulatedServer(i, profile="steady", seed=i) for i in range(agents)]
    agent = Agent(AgentSettings(), sims)
    runner = asyncio.create_task(agent.run(seconds))
    start = time.time()
    order = iter(sims[:: max(1, agents // max(1, int(per_second * (seconds - warmup))))])
    await asyncio.sleep(warmup)
    pinned = 0
    while time.time() - start < seconds - hold - 1:
        due = start + warmup + pinned / per_second
        await asyncio.sleep(max(0.0, due - time.time()))
        sim = next(order, None)
        if sim is None:
            break
        sim.force("critical", hold)
        print(json.dumps({"server_id": sim.server_id, "at": time.time()}), flush=True)
        pinned += 1
    await runner
    await agent.flush(10)


def main() -> None:
    parser = argparse.ArgumentParser(description="Driver of fleetdeck bench alerts")
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--per-second", type=float, default=5.0)
    parser.add_argument("--hold", type=float, default=6.0)
    args = parser.parse_args()
    asyncio.run(_drive(args.agents, args.seconds, args.warmup, args.per_second, args.hold))


if __name__ == "__main__":
    main()
