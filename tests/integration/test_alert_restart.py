"""Killing the stream workers while an alert fires loses no alert state and sends no
notification twice (a real webhook receiver counts them)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from agent.runner import Agent
from agent.settings import AgentSettings
from connectors.kafka import KafkaSettings
from tests.conftest import bearer, drop_keys, eventually, make_admin, make_stack, sim_servers
from tests.integration.test_alerts import create_rule, in_state, rule_id

pytestmark = pytest.mark.integration


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An Alertmanager-style webhook receiver recording every delivery."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        received.append({"body": body, "key": request.headers.get("Idempotency-Key")})
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


async def test_worker_restart_keeps_alert_state_and_notifies_once(
        tmp_path: Any, receiver: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = receiver
    stack = await asyncio.to_thread(make_stack, tmp_path, "restart", webhook_urls=[url])
    try:
        admin = await make_admin(stack.endpoints.sql_url)
        async with httpx.AsyncClient(base_url=stack.endpoints.ui_url, timeout=10,
                                     headers=bearer(admin.token)) as api:
            sim = sim_servers(1)[0]
            server, rule = sim.server_id, rule_id("restart")
            await create_rule(api, id=rule, expr="cpu.total > 95", clear=50,
                              match=[{"label": "server_id", "value": server}])
            agent = Agent(AgentSettings(kafka=KafkaSettings(
                bootstrap_servers=stack.endpoints.kafka, request_timeout_ms=3000)), [sim])
            task = asyncio.create_task(agent.run())
            try:
                sim.force("critical", 600)
                firing = await eventually(lambda: in_state(api, server, rule, "firing"),
                                          timeout=60)

                def mine(status: str) -> list[dict[str, Any]]:
                    return [r for r in received
                            if r["body"]["alerts"][0]["fingerprint"] == firing["alert_id"]
                            and r["body"]["status"] == status]

                await eventually(lambda: asyncio.sleep(0, mine("firing")), timeout=30)
                workers = [s for s in stack.services if s.name.startswith("streams")]
                for worker in workers:  # no goodbye: state must come from the changelog
                    assert worker.proc is not None
                    worker.proc.send_signal(signal.SIGKILL)
                    worker.proc.wait(10)
                stack.supervisor.restart_exited()
                await asyncio.sleep(20)  # samples keep crossing the threshold meanwhile
                still = await in_state(api, server, rule, "firing")
                assert still is not None and still["seq"] == firing["seq"]

                sim.force("ok", 600)
                resolved = await eventually(lambda: in_state(api, server, rule, "resolved"),
                                            timeout=90)
                assert resolved["seq"] > firing["seq"]
                history = (await api.get(f"/api/v1/alerts/{firing['alert_id']}")).json()["history"]
                assert [h["transition"] for h in history] == ["firing", "resolved"]
                await eventually(lambda: asyncio.sleep(0, mine("resolved")), timeout=30)
                await asyncio.sleep(3)  # time for any duplicate to arrive
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        await asyncio.to_thread(stack.stop)
        drop_keys(stack)
    assert len(mine("firing")) == 1 and len(mine("resolved")) == 1
    keys = [r["key"] for r in received]
    assert len(keys) == len(set(keys))
    payload = mine("firing")[0]["body"]
    assert payload["version"] == "4" and payload["alerts"][0]["labels"]["rule_id"] == rule
