"""``fleetdeck bench dispatch``: PING through the API → the agent's ACK recorded by the control
plane, with every simulated server publishing metrics at 1 Hz meanwhile.

Two driver processes (``python -m fleetdeck.bench.dispatch``) stand in for N agents: one runs
N steady simulated servers at 1 Hz, the other, for all of them, the command side of
``fleetdeck agent`` (the real listener, executor with its fsync'd replay guard, and event
sender). They are separate because a real agent's loop samples one server, a few
milliseconds a second; the simulator samples and encodes N servers in one burst each
second, and a command listener sharing its loop waited behind that burst (with 1,000
servers that was most of the dispatch latency: ACK p50 ≈ 270 ms after the command reached
the broker). This process acts with the stack's API token
(operator role or higher), waits until the API knows every server and the agents answer a
probe, then sends M PING commands through ``POST /api/v1/commands`` at ``rate`` per second
(at most ``concurrency`` in flight), round-robin over the servers, while it reads
``/api/v1/commands/stream``.

Latency = the record's ``created_at`` (stamped by the API as it accepts the request, before it
stores, audits, signs and produces the command) → the moment this process receives the change
that shows the ACK on the commands SSE stream. The control worker publishes a change only
after its compare-and-set write to the SQL store succeeded, so the end point is "ACK recorded
by the control plane", plus the Redis → SSE hop. ``recorded_*`` is created → the control
worker's own timestamp of the ACK transition (taken just before that SQL write). Both ends are
read on this machine's clock: against services elsewhere, clock skew adds to the figures.

``lost`` = accepted commands with no ACK in their SQL record (read back through the API) once
the drain time is over; an ACK recorded but never seen on the stream counts as
``stream_missed``, not as lost, and has no latency sample.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
from aiokafka.errors import KafkaError
from rich.progress import Progress

from fleetdeck.bench.common import CpuMeter, console, percentile
from fleetdeck.procs import prepare_child
from fleetdeck.stack import Endpoints

#: statuses that show the control plane recorded the agent's ACK (a lost ACK is implied by
#: the first later report, which sets ``acked_at`` too)
ACKED = frozenset({"acked", "running", "succeeded", "failed", "timed-out"})
WAIT_KNOWN_S = 180.0
WAIT_LISTENER_S = 60.0


@dataclass
class Run:
    """What the bench saw: per command id, when it was created and when its ACK arrived."""

    created: dict[str, float] = field(default_factory=dict)  # epoch s, the API's created_at
    acked_seen: dict[str, float] = field(default_factory=dict)  # epoch s, SSE receipt
    acked_at: dict[str, float] = field(default_factory=dict)  # epoch s, the worker's stamp
    on_log: dict[str, float] = field(default_factory=dict)  # epoch s, command produced
    ack_on_log: dict[str, float] = field(default_factory=dict)  # epoch s, ACK produced
    rejected: dict[str, str] = field(default_factory=dict)
    api_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


#: longest the per-stage figures may take to read back from the broker after the run
LOG_TIMES_TIMEOUT_S = 60.0
#: the two driver processes: simulated servers' samples, and the command side for all of them
ROLES = ("samples", "commands")


class BenchError(Exception):
    """The bench cannot go on (a service unreachable, a driver gone): said in one line."""


def server_ids(agents: int) -> list[str]:
    from agent.simulate import SimulatedServer

    return [SimulatedServer(i, profile="steady").server_id for i in range(agents)]


async def measure(endpoints: Endpoints, agents: int, commands: int, *,
                  rate: float = 50.0, concurrency: int = 16, drain_s: float = 30.0,
                  tenant: str = "default", control_key: str = "",
                  pids: dict[str, int] | None = None) -> dict[str, Any]:
    ids = server_ids(agents)
    run = Run()
    seconds = WAIT_KNOWN_S + WAIT_LISTENER_S + commands / rate + drain_s + 30
    logs = {role: tempfile.TemporaryFile() for role in ROLES}
    started_ms = int(time.time() * 1000)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="fleetdeck-bench-agents-") as state:
        try:
            for role in ROLES:
                procs[role] = _driver(endpoints, agents, seconds, tenant, Path(state) / role,
                                      control_key, logs[role], role)
            # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so no POST
            # goes out on a connection the server is closing (it would count as an error).
            limits = httpx.Limits(max_connections=concurrency + 4, keepalive_expiry=2.0)
            async with httpx.AsyncClient(base_url=endpoints.ui_url, headers=endpoints.auth(),
                                         timeout=30, limits=limits) as client:
                opened = asyncio.Event()
                reader = asyncio.create_task(_read(client, run, opened))
                try:
                    await _prepare(client, procs, ids, run, opened, reader)
                    meter = CpuMeter({**(pids or {}), "agents": procs["samples"].pid,
                                      "agent-commands": procs["commands"].pid,
                                      "bench-client": os.getpid()})
                    meter.start()
                    await _send_all(client, ids, commands, rate, concurrency, run)
                    await _drain(run, drain_s)
                    cpu = meter.stop()
                finally:
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
                missed = await _recorded_unseen(client, run)
            if endpoints.kafka:
                try:
                    async with asyncio.timeout(LOG_TIMES_TIMEOUT_S):
                        await _read_log_times(endpoints.kafka, started_ms, run)
                except (TimeoutError, KafkaError, OSError) as exc:  # the rest stands
                    console.print(f"no per-stage figures: cannot read the log's times ({exc!r})")
        finally:
            totals = {}
            for role, proc in procs.items():
                try:
                    totals.update(_stop(role, proc, logs[role]))
                except (OSError, subprocess.SubprocessError) as exc:  # stop the others
                    console.print(f"cannot stop the agents' {role} driver: {exc!r}")
            for log in logs.values():
                log.close()
    return _result(run, missed, totals, agents, commands, rate, concurrency, cpu)


def _driver(endpoints: Endpoints, agents: int, seconds: float, tenant: str, state: Path,
            control_key: str, log: IO[bytes], role: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **endpoints.env(), "FLEETDECK_AGENT_STATE_DIR": str(state),
           "FLEETDECK_AGENT_TENANT": tenant}
    if control_key:
        env["FLEETDECK_AGENT_CONTROL_KEY"] = control_key
    return subprocess.Popen(
        [sys.executable, "-m", "fleetdeck.bench.dispatch", "--agents", str(agents),
         "--seconds", f"{seconds:.0f}", "--role", role],
        stdout=log, stderr=subprocess.STDOUT, env=env,
        preexec_fn=functools.partial(prepare_child, 0))  # dies with this process


def _stop(role: str, proc: subprocess.Popen[bytes], log: IO[bytes]) -> dict[str, Any]:
    """Stop the ``role`` driver (it sends what it spooled) and return its totals line."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    log.seek(0)
    text = log.read().decode(errors="replace")
    for line in reversed(text.splitlines()):
        if line.startswith('{"driver"'):
            return dict(json.loads(line))
    if text.strip():
        console.print(f"the agents' {role} driver left no totals; its output ends with:\n"
                      f"{text[-2000:]}", markup=False)
    return {}


async def _prepare(client: httpx.AsyncClient, procs: dict[str, subprocess.Popen[bytes]],
                   ids: list[str], run: Run, opened: asyncio.Event,
                   reader: asyncio.Task[None]) -> None:
    """Wait for the SSE stream, for the API to know every server, and for the agents'
    listener to ACK a probe (the listener starts at the end of the topic: anything sent
    before it has its position would never reach it)."""
    known = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"waiting for the API to know {len(ids)} servers",
                                 total=len(ids))
        try:
            async with asyncio.timeout(WAIT_KNOWN_S):
                while not opened.is_set():  # the stream is open, or why not
                    _alive(procs)
                    if reader.done():
                        error = reader.exception()
                        url = f"{str(client.base_url).rstrip('/')}/api/v1/commands/stream"
                        raise BenchError(f"cannot read {url}: {error!r}")
                    await asyncio.sleep(0.2)
                while True:
                    _alive(procs)
                    known = await _known(client, ids)
                    progress.update(task, completed=known)
                    if known == len(ids):
                        break
                    await asyncio.sleep(1.0)
        except TimeoutError:
            raise BenchError(f"the API knew {known} of the {len(ids)} servers after "
                             f"{WAIT_KNOWN_S:.0f} s") from None
    probe = Run()
    with console.status("waiting for the agents' command listener…"):
        deadline = time.monotonic() + WAIT_LISTENER_S
        while time.monotonic() < deadline:
            _alive(procs)
            await _post(client, ids[0], "probe", probe)
            for _ in range(20):
                if probe.created.keys() & run.acked_seen.keys():
                    return
                await asyncio.sleep(0.1)
    raise BenchError(f"no ACK of a probe command within {WAIT_LISTENER_S:.0f} s "
                     f"({probe.errors} refused; first: {probe.first_error or 'none'})")


def _alive(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for role, proc in procs.items():
        if proc.poll() is not None:
            raise BenchError(f"the agents' {role} driver exited early with "
                             f"{proc.returncode}; see its output above")


async def _known(client: httpx.AsyncClient, ids: list[str]) -> int:
    resp = await client.get("/api/v1/servers")
    if resp.status_code != 200:
        raise BenchError(f"GET /api/v1/servers answered {resp.status_code}: {resp.text[:200]}")
    seen = {s["server_id"] for s in resp.json()["servers"]}
    return len(seen.intersection(ids))


async def _read(client: httpx.AsyncClient, run: Run, opened: asyncio.Event) -> None:
    """Note the first change of every command that shows its ACK recorded."""
    async with client.stream("GET", "/api/v1/commands/stream", timeout=None) as resp:
        resp.raise_for_status()
        opened.set()
        event = ""
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "command":
                now = time.time()
                data = orjson.loads(line[5:])
                command_id, status = data["id"], data["status"]
                if status in ACKED and command_id not in run.acked_seen:
                    run.acked_seen[command_id] = now
                    run.acked_at[command_id] = _epoch(data["updated_at"])
                elif status == "rejected":
                    run.rejected[command_id] = str(data.get("message", ""))


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def _post(client: httpx.AsyncClient, server_id: str, note: str, run: Run) -> None:
    body = {"server_id": server_id, "type": "PING", "params": {"payload": note},
            "reason": "fleetdeck bench dispatch"}
    t0 = time.perf_counter()
    try:
        resp = await client.post("/api/v1/commands", json=body)
    except httpx.HTTPError as exc:
        run.errors += 1
        run.first_error = run.first_error or repr(exc)
        return
    if resp.status_code != 202:
        run.errors += 1
        run.first_error = run.first_error or f"{resp.status_code} {resp.text[:300]}"
        return
    run.api_ms.append((time.perf_counter() - t0) * 1000)
    record = resp.json()["command"]
    run.created[record["command"]["id"]] = _epoch(record["created_at"])


async def _send_all(client: httpx.AsyncClient, ids: list[str], commands: int, rate: float,
                    concurrency: int, run: Run) -> None:
    """``commands`` PINGs at ``rate`` per second, at most ``concurrency`` in flight."""
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        try:
            await _post(client, ids[i % len(ids)], f"bench-{i}", run)
        finally:
            slots.release()

    tasks = []
    start = time.monotonic()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"sending {commands} PINGs at {rate:g}/s", total=commands)
        for i in range(commands):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            await slots.acquire()
            tasks.append(asyncio.create_task(one(i)))
            progress.update(task, completed=i + 1,
                            description=f"sent {i + 1}, acked {len(run.acked_seen)}")
        await asyncio.gather(*tasks)


async def _drain(run: Run, drain_s: float) -> None:
    """Wait (at most ``drain_s``) until every accepted command's ACK was seen."""
    deadline = time.monotonic() + drain_s
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("waiting for the last ACKs", total=len(run.created))
        while time.monotonic() < deadline:
            done = len(run.created.keys() & (run.acked_seen.keys() | run.rejected.keys()))
            progress.update(task, completed=done)
            if done == len(run.created):
                return
            await asyncio.sleep(0.2)


async def _recorded_unseen(client: httpx.AsyncClient, run: Run) -> set[str]:
    """Commands whose ACK the SQL record shows though the stream did not (at most 500 looked
    up; the rest count as lost)."""
    unseen = sorted(run.created.keys() - run.acked_seen.keys())[:500]
    found = set()
    for command_id in unseen:
        resp = await client.get(f"/api/v1/commands/{command_id}")
        if resp.status_code == 200 and resp.json()["command"].get("acked_at"):
            found.add(command_id)
    return found


async def _read_log_times(kafka: str, since_ms: int, run: Run) -> None:
    """When each command of the run went onto ``fd.commands`` and its ACK onto
    ``fd.command-events`` (the records' producer timestamps), for the per-stage figures."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from schemas.topics import COMMAND_EVENTS, COMMANDS

    into = {COMMANDS.name: run.on_log, COMMAND_EVENTS.name: run.ack_on_log}
    parts = [TopicPartition(topic.name, p) for topic in (COMMANDS, COMMAND_EVENTS)
             for p in range(topic.partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        starts = await consumer.offsets_for_times({tp: since_ms for tp in parts})
        for tp in parts:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found else ends[tp])
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=2000)
            if not batches:
                break  # nothing more arrives (a gap before the end offset)
            for records in batches.values():
                for record in records:
                    command_id = _command_id(record.topic == COMMANDS.name, record.value)
                    if command_id in run.created:
                        into[record.topic].setdefault(command_id, record.timestamp / 1000)
    finally:
        await consumer.stop()


def _command_id(signed: bool, value: bytes | None) -> str | None:
    """The command id of a signed command, or of an ACK event (None: anything else)."""
    from schemas.commands import EventKind

    try:
        data = orjson.loads(value or b"{}")
        if signed:
            return str(orjson.loads(data["command"])["id"])
        return str(data["command_id"]) if data.get("kind") == EventKind.ACKED else None
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None  # not one of ours


def _stages(run: Run, seen: set[str]) -> dict[str, dict[str, float]]:
    """p50/p95 of each stage, for the commands whose both log times were found."""
    ids = [i for i in seen if i in run.on_log and i in run.ack_on_log]
    spans = {
        "api: created -> command on the log": [run.on_log[i] - run.created[i] for i in ids],
        "agent: command on the log -> ACK on the log":
            [run.ack_on_log[i] - run.on_log[i] for i in ids],
        "control: ACK on the log -> ACK stamped": [run.acked_at[i] - run.ack_on_log[i]
                                                   for i in ids],
        "stream: ACK stamped -> seen on SSE": [run.acked_seen[i] - run.acked_at[i] for i in ids],
    }
    figures = {}
    for name, seconds in spans.items():
        ms = [v * 1000 for v in seconds]
        figures[name] = {"p50_ms": round(percentile(ms, 50), 1),
                         "p95_ms": round(percentile(ms, 95), 1)}
    return figures


def _result(run: Run, missed: set[str], totals: dict[str, Any], agents: int, commands: int,
            rate: float, concurrency: int, cpu: dict[str, float]) -> dict[str, Any]:
    seen = run.created.keys() & run.acked_seen.keys()
    latencies = [(run.acked_seen[i] - run.created[i]) * 1000 for i in seen]
    recorded = [(run.acked_at[i] - run.created[i]) * 1000 for i in seen]
    sent, acked = len(run.created), len(seen) + len(missed)
    return {"bench": "dispatch", "agents": agents, "commands": commands, "rate": rate,
            "concurrency": concurrency,
            "measured": "record created_at -> ACK change received on /api/v1/commands/stream",
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99), "max_ms": max(latencies, default=0.0),
            "recorded_p50_ms": percentile(recorded, 50),
            "recorded_p95_ms": percentile(recorded, 95), "stages": _stages(run, seen),
            "api_p50_ms": percentile(run.api_ms, 50), "api_p95_ms": percentile(run.api_ms, 95),
            "sent": sent, "acked": acked, "lost": sent - acked, "errors": run.errors,
            "first_error": run.first_error,
            "rejected": len(run.created.keys() & run.rejected.keys()),
            "stream_missed": len(missed), "agent_acked": totals.get("acked"),
            "samples": totals.get("samples"), "cpu_pct_of_core": cpu}


# -- the driver: simulated servers at 1 Hz with one command side for all of them -----------

async def _drive(agents: int, seconds: float, role: str) -> None:
    """Run ``role`` for ``agents`` simulated servers: their samples at 1 Hz, or the command
    side for all of them, until ``seconds`` pass or SIGTERM; print the totals line."""
    from agent.main import Commands
    from agent.runner import Agent
    from agent.settings import AgentSettings
    from agent.simulate import SimulatedServer

    settings = AgentSettings()
    sims = [SimulatedServer(i, tenant=settings.tenant, profile="steady", seed=i)
            for i in range(agents)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if role == "samples":
        agent = Agent(settings, sims)
        sampling = asyncio.create_task(agent.run(seconds))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([sampling, stopped], return_when=asyncio.FIRST_COMPLETED)
        for task in (sampling, stopped):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        await agent.flush(5)
        print(json.dumps({"driver": "dispatch", "samples": agent.samples}), flush=True)
        return
    key_file = settings.control_key_file()
    if key_file is None:
        raise SystemExit("no control-plane key: set FLEETDECK_AGENT_CONTROL_KEY")
    # A consumer group of its own per run: no position left by an earlier run applies.
    commands = Commands(settings, {s.server_id: settings.tenant for s in sims}, key_file,
                        f"fd-bench-dispatch-{uuid.uuid4().hex[:12]}")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    await commands.stop()
    print(json.dumps({"driver": "dispatch", "received": commands.listener.received,
                      **commands.executor.counts}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Driver of fleetdeck bench dispatch")
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--role", choices=ROLES, required=True)
    args = parser.parse_args()
    asyncio.run(_drive(args.agents, args.seconds, args.role))


if __name__ == "__main__":
    main()
