"""``fleetdeck bench query``: the series API against the same query sent straight to VM.

Fills VictoriaMetrics with N servers' last hour (or range) at 1 s, registers the servers
in Redis, then times pairs of API and raw requests for random servers, the same query with
the same end time; which of the two goes first (and so finds VictoriaMetrics' rollup cache
cold) is drawn at random for each pair, so both see the same cache and load.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from rich.progress import Progress

from connectors.victoriametrics import VMClient, VMSettings
from fleetdeck.bench.common import console, percentile
from fleetdeck.stack import Endpoints
from schemas import CHANNELS, RedisKeys
from ui import series

CHANNELS_QUERIED = series.DEFAULT_CHANNELS
#: The raw query asks for the answer uncompressed, as the UI does (VMSettings.compress_answers
#: off): both sides of the ratio get the same work from VictoriaMetrics.
RAW_HEADERS = {"Accept-Encoding": "identity"}
#: The tenant of the filled servers: the embedded stack's token is of this tenant.
TENANT = "default"


def _series_lines(server_id: str, start: int, seconds: int, rng: random.Random) -> list[bytes]:
    timestamps = [(start + i) * 1000 for i in range(seconds)]
    lines = []
    for name in CHANNELS_QUERIED:
        level, values = rng.uniform(10, 60), []
        for _ in range(seconds):
            level = min(100.0, max(0.0, level + rng.gauss(0, 1.5)))
            values.append(round(level, 2))
        metric = {"__name__": CHANNELS[name].metric, "server": server_id, "tenant": TENANT}
        lines.append(orjson.dumps({"metric": metric, "values": values,
                                   "timestamps": timestamps}))
    return lines


async def fill(endpoints: Endpoints, servers: int, range_s: int) -> list[str]:
    ids = [f"bench-{i:05d}" for i in range(servers)]
    end = int(time.time())
    rng = random.Random(7)
    vm = VMClient(VMSettings(url=endpoints.vm_url, timeout_s=120))
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"filling {servers} servers x {range_s} s", total=servers)
            batch: list[bytes] = []
            for server_id in ids:
                batch.extend(_series_lines(server_id, end - range_s, range_s, rng))
                if len(batch) >= 200:
                    await vm.import_json(batch)
                    batch = []
                progress.advance(task)
            if batch:
                await vm.import_json(batch)
    finally:
        await vm.close()
    async with httpx.AsyncClient(timeout=60) as client:  # make the import visible to queries
        (await client.get(f"{endpoints.vm_url}/internal/force_flush")).raise_for_status()
    await _register(endpoints, ids)
    return ids


async def _register(endpoints: Endpoints, ids: list[str]) -> None:
    keys = RedisKeys(endpoints.redis_prefix)
    client = aioredis.from_url(endpoints.redis_url)
    try:
        summaries = {i: orjson.dumps({"server_id": i, "hostname": i, "tenant": TENANT,
                                      "health": "OK", "reasons": []}) for i in ids}
        await client.hset(keys.servers, mapping=summaries)  # type: ignore[arg-type]
    finally:
        await client.aclose()


async def measure(endpoints: Endpoints, ids: list[str], range_text: str,
                  requests: int) -> dict[str, Any]:
    range_s = series.parse_range(range_text)
    api_ms: list[float] = []
    raw_ms: list[float] = []
    rng = random.Random(11)
    async with httpx.AsyncClient(timeout=30, headers=endpoints.auth()) as client:
        for _ in range(20):  # warm both paths and their connections
            await _time_pair(client, endpoints, rng.choice(ids), range_text, range_s,
                             rng.random() < 0.5)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"{requests} query pairs", total=requests)
            for _ in range(requests):
                api, raw = await _time_pair(client, endpoints, rng.choice(ids), range_text,
                                            range_s, rng.random() < 0.5)
                api_ms.append(api)
                raw_ms.append(raw)
                progress.advance(task)
    p95, raw_p95 = percentile(api_ms, 95), percentile(raw_ms, 95)
    return {"bench": "query", "servers": len(ids), "range": range_text, "requests": requests,
            "p50_ms": percentile(api_ms, 50), "p95_ms": p95,
            "raw_p50_ms": percentile(raw_ms, 50), "raw_p95_ms": raw_p95,
            "ratio_p95": p95 / raw_p95 if raw_p95 else float("nan")}


async def _time_pair(client: httpx.AsyncClient, endpoints: Endpoints, server_id: str,
                     range_text: str, range_s: int, raw_first: bool) -> tuple[float, float]:
    """One API request and the same query sent straight to VictoriaMetrics, with the same
    end time, in the order given: whichever goes second finds the query in
    VictoriaMetrics' rollup cache, so the order is drawn at random for each pair."""
    q = series.SeriesQuery(server_id, TENANT, CHANNELS_QUERIED, range_s,
                           series.parse_step(None, range_s), round(time.time(), 3))

    async def api() -> float:
        t0 = time.perf_counter()
        resp = await client.get(f"{endpoints.ui_url}/api/v1/servers/{server_id}/series",
                                params={"channels": ",".join(CHANNELS_QUERIED),
                                        "range": range_text, "end": f"{q.end:.3f}"})
        elapsed = (time.perf_counter() - t0) * 1000
        resp.raise_for_status()
        body = resp.json()
        if not body["series"] or not body["series"][0]["timestamps"]:
            raise RuntimeError(f"the API returned no points for {server_id}")
        if body["step_s"] != q.step_s or abs(body["end"] - q.end) > 0.001:
            raise RuntimeError(f"the API ran another query (step {body['step_s']}, "
                               f"end {body['end']}) than the raw one")
        return elapsed

    async def raw() -> float:
        t0 = time.perf_counter()
        resp = await client.get(f"{endpoints.vm_url}/api/v1/query_range", params={
            "query": series.build_query(q), "start": f"{q.start:.3f}", "end": f"{q.end:.3f}",
            "step": f"{q.step_s}s"}, headers=RAW_HEADERS)
        elapsed = (time.perf_counter() - t0) * 1000
        resp.raise_for_status()
        return elapsed

    if raw_first:
        raw_ms = await raw()
        return await api(), raw_ms
    api_ms = await api()
    return api_ms, await raw()


def run(endpoints: Endpoints, servers: int, range_text: str, requests: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        ids = await fill(endpoints, servers, series.parse_range(range_text))
        return await measure(endpoints, ids, range_text, requests)

    return asyncio.run(main())
