"""The live monitoring path end to end, on the real broker, worker, Redis and VictoriaMetrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connectors.victoriametrics import VMClient, VMSettings
from fleetdeck.stack import EmbeddedStack
from tests.conftest import FleetFactory, eventually, sim_servers

pytestmark = pytest.mark.integration


async def server(api: httpx.AsyncClient, server_id: str) -> dict[str, Any] | None:
    for item in (await api.get("/api/v1/servers")).json()["servers"]:
        if item["server_id"] == server_id:
            return item  # type: ignore[no-any-return]
    return None


async def read_events(api: httpx.AsyncClient, url: str, count: int,
                      headers: dict[str, str] | None = None,
                      want: str = "sample") -> list[dict[str, Any]]:
    """The first ``count`` events named ``want`` of an SSE stream (id, event, data)."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(30), api.stream("GET", url, headers=headers or {}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if not line:
                if current.get("event") == want:
                    events.append(current)
                    if len(events) == count:
                        return events
                current = {}
                continue
            field, _, value = line.partition(":")
            current[field] = orjson.loads(value) if field == "data" else value.strip()
    return events


async def test_samples_reach_the_api_the_store_and_the_stream(
        api: httpx.AsyncClient, fleet: FleetFactory) -> None:
    sims = sim_servers(3)
    await fleet(sims)
    target = sims[0].server_id
    found = await eventually(lambda: server(api, target), timeout=60)
    assert found["hostname"] == sims[0].hostname and found["health"] in {"OK", "WARNING"}
    assert 0 <= found["cpu"] <= 100 and 0 <= found["mem"] <= 100

    async def points() -> int:
        resp = await api.get(f"/api/v1/servers/{target}/series",
                             params={"channels": "cpu.total,mem.used_pct", "range": "15m",
                                     "step": "1"})
        assert resp.status_code == 200, resp.text
        series = {s["channel"]: s for s in resp.json()["series"]}
        return len(series["cpu.total"]["timestamps"]) if "cpu.total" in series else 0

    assert await eventually(lambda: _at_least(points, 3), timeout=30)
    detail = (await api.get(f"/api/v1/servers/{target}")).json()
    assert detail["sample"]["server_id"] == target and detail["sample"]["cpu"]["per_core"]


async def test_query_answers_are_the_same_compressed_or_not(
        api: httpx.AsyncClient, fleet: FleetFactory, stack: EmbeddedStack) -> None:
    sims = sim_servers(1)
    await fleet(sims)
    query = f'{{__name__="fd_cpu_total",server="{sims[0].server_id}"}}'
    plain = VMClient(VMSettings(url=stack.endpoints.vm_url))
    gzipped = VMClient(VMSettings(url=stack.endpoints.vm_url, compress_answers=True))
    try:
        answers: list[Any] = []

        async def agree() -> bool:  # a point may land between the two queries: ask again
            end = int(time.time())
            answers[:] = [orjson.loads(await c.query_range_raw(query, end - 600, end, 1))
                          for c in (plain, gzipped)]
            return bool(answers[0]["data"]["result"]) and answers[0] == answers[1]

        await eventually(agree, timeout=30, describe=lambda: answers)
        assert answers[0]["status"] == "success"
    finally:
        await plain.close()
        await gzipped.close()


async def _at_least(fn: Any, n: int) -> bool:
    return bool(await fn() >= n)


async def test_stream_resumes_from_last_event_id_without_gaps_or_duplicates(
        api: httpx.AsyncClient, fleet: FleetFactory) -> None:
    sims = sim_servers(1)
    await fleet(sims)
    await eventually(lambda: server(api, sims[0].server_id), timeout=60)
    url = f"/api/v1/stream?server={sims[0].server_id}"
    first = await read_events(api, url, 3)
    seqs = [e["data"]["seq"] for e in first]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    await asyncio.sleep(2.5)  # events keep coming while we are away
    resumed = await read_events(api, url, 3, headers={"Last-Event-ID": first[-1]["id"]})
    assert [e["data"]["seq"] for e in resumed] == [seqs[-1] + 1, seqs[-1] + 2, seqs[-1] + 3]
    assert resumed[0]["id"] > first[-1]["id"]


async def test_forced_critical_server_turns_critical_live(
        api: httpx.AsyncClient, fleet: FleetFactory) -> None:
    sims = sim_servers(2)
    await fleet(sims)
    target = sims[1].server_id
    await eventually(lambda: server(api, target), timeout=60)
    waiter = asyncio.create_task(read_events(api, "/api/v1/stream", 50, want="health"))
    await asyncio.sleep(0.5)
    sims[1].force("critical", 60)

    async def critical() -> bool:
        found = await server(api, target)
        return bool(found and found["health"] == "CRITICAL")

    await eventually(critical, timeout=20)
    crit = (await api.get("/api/v1/servers", params={"health": "CRITICAL"})).json()["servers"]
    assert target in {s["server_id"] for s in crit}
    assert all(s["health"] == "CRITICAL" for s in crit)
    found = await server(api, target)
    assert found is not None and any("cpu.total" in r for r in found["reasons"])
    waiter.cancel()


async def test_silent_server_goes_stale(api: httpx.AsyncClient, fleet: FleetFactory) -> None:
    sims = sim_servers(1)
    await fleet(sims)
    target = sims[0].server_id
    await eventually(lambda: server(api, target), timeout=60)
    sims[0].force("silent", 120)

    async def stale() -> bool:
        found = await server(api, target)
        return bool(found and found["health"] in {"STALE", "OFFLINE"})

    await eventually(stale, timeout=20)


async def test_bad_messages_are_dead_lettered_and_the_worker_keeps_going(
        stack: EmbeddedStack, api: httpx.AsyncClient, fleet: FleetFactory) -> None:
    before = await _dead_letter_count(api)
    producer = AIOKafkaProducer(bootstrap_servers=stack.endpoints.kafka,
                                max_request_size=4_000_000)
    await producer.start()
    try:
        for payload in (b"{broken", b'{"schema_version": 99, "server_id": "x"}',
                        b'{"schema_version": 1}', b"x" * 1_100_000):
            await producer.send_and_wait("fd.metrics", payload, key=b"bad")
    finally:
        await producer.stop()
    sims = sim_servers(1)
    await fleet(sims)
    await eventually(lambda: server(api, sims[0].server_id), timeout=60)

    async def counted() -> bool:
        return await _dead_letter_count(api) >= before + 4

    await eventually(counted, timeout=30)
    reasons = await _dead_letter_reasons(stack)
    assert {"undecodable", "wrong_version", "invalid", "oversized"} <= reasons


async def _dead_letter_count(api: httpx.AsyncClient) -> int:
    text = (await api.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("fleetdeck_dead_letters_total "):
            return int(line.split()[1])
    return 0


async def _dead_letter_reasons(stack: EmbeddedStack) -> set[str]:
    consumer = AIOKafkaConsumer("fd.dead-letter", bootstrap_servers=stack.endpoints.kafka,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        return {orjson.loads(m.value)["reason"] for msgs in batches.values() for m in msgs}
    finally:
        await consumer.stop()


@pytest.mark.parametrize(("path", "status", "names"), [
    ("/api/v1/servers?health=SHINY", 400, "'health'"),
    ("/api/v1/servers/x/series?range=forever", 400, "'range'"),
    ("/api/v1/servers/x/series?channels=cpu.total,bogus", 400, "'channels'"),
    ("/api/v1/servers/x/series?step=0", 400, "'step'"),
    ("/api/v1/servers/x/series?end=abc", 400, "'end'"),
    ("/api/v1/servers/bad%20id/series", 400, "'id'"),
    ("/api/v1/servers/no-such-server", 404, "no-such-server"),
    ("/api/v1/servers/no-such-server/series", 404, "no-such-server"),
    ("/api/v1/stream?server=..%2Fetc", 400, "'server'"),
    ("/api/v1/nothing-here", 404, ""),
])
async def test_bad_requests_get_json_errors_naming_the_parameter(
        api: httpx.AsyncClient, path: str, status: int, names: str) -> None:
    resp = await api.get(path)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["code"] and names in error["message"]


async def test_bad_last_event_id_is_rejected(api: httpx.AsyncClient) -> None:
    resp = await api.get("/api/v1/stream", headers={"Last-Event-ID": "DROP TABLE"})
    assert resp.status_code == 400 and "Last-Event-ID" in resp.json()["error"]["message"]


async def test_health_metrics_openapi_and_channels(api: httpx.AsyncClient) -> None:
    health = await api.get("/healthz")
    assert health.status_code == 200 and health.json()["checks"] == {
        "redis": True, "victoriametrics": True}
    metrics = (await api.get("/metrics")).text
    assert "fleetdeck_ui_uptime_seconds" in metrics
    spec = (await api.get("/api/v1/openapi.json")).json()
    for path in ("/api/v1/servers", "/api/v1/servers/{id}/series", "/api/v1/stream",
                 "/healthz", "/metrics"):
        assert path in spec["paths"], path
    channels = {c["name"]: c for c in (await api.get("/api/v1/channels")).json()["channels"]}
    assert channels["cpu.total"]["unit"] == "%" and channels["net.rx_bps"]["unit"] == "B/s"


async def test_stream_rejects_unknown_servers_and_ids_from_the_future(
        api: httpx.AsyncClient, fleet: FleetFactory) -> None:
    resp = await api.get("/api/v1/stream", params={"server": "no-such-server"})
    assert resp.status_code == 404
    resp = await api.get("/api/v1/stream", headers={"Last-Event-ID": "99999999999999-0"})
    assert resp.status_code == 400 and "newer" in resp.json()["error"]["message"]
