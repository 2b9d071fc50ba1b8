"""The webhook notifier against a real HTTP receiver (aiohttp.web on a free local port)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from connectors.webhook import WebhookError, WebhookNotifier, WebhookSettings, alertmanager_payload
from schemas.alerts import AlertEvent, AlertState, Severity, alert_id

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.5  # the notifier's timeout_s; the slow receiver holds requests far longer


@dataclass
class Receiver:
    """Records every request it gets; answers by path."""

    url: str
    bodies: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    failures_left: int = 2  # /flaky answers 500 this many times, then 200
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends /slow requests

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(json.loads(await request.read()))
        self.headers.append(dict(request.headers))
        self.paths.append(request.path)
        name = request.match_info["name"]
        if name == "slow":
            async with asyncio.timeout(10):
                await self.release.wait()
        if name == "flaky" and self.failures_left > 0:
            self.failures_left -= 1
            return web.Response(status=500, text="try later")
        if name == "redirect":
            raise web.HTTPFound(f"{self.url}/ok")
        if name == "busy":
            return web.Response(status=429, text="slow down", headers={"Retry-After": "0"})
        status = {"fail": 500, "bad": 400, "unavailable": 503}.get(name, 200)
        return web.Response(status=status, text="nope" if status >= 400 else "ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver(url="")
    app = web.Application()
    app.router.add_post("/{name}", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        recv.url = f"http://{host}:{port}"
        yield recv
    finally:
        recv.release.set()
        await runner.cleanup()


@pytest.fixture
async def notifier() -> AsyncIterator[WebhookNotifier]:
    client = WebhookNotifier(WebhookSettings(timeout_s=TIMEOUT_S, max_attempts=4,
                                             backoff_initial_s=0.01, backoff_max_s=0.05))
    try:
        yield client
    finally:
        await client.close()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def payload(seq: int = 1) -> dict[str, Any]:
    event = AlertEvent(alert_id=alert_id("disk-full", "srv-9", "/data"), seq=seq,
                       rule_id="disk-full", severity=Severity.WARNING, server_id="srv-9",
                       item="/data", state=AlertState.FIRING, transition="firing",
                       value=96.0, condition="fs.used_pct[/data] >= 95",
                       ts=datetime(2024, 5, 1, 12, tzinfo=UTC))
    return alertmanager_payload(event, "test", "http://127.0.0.1:8000")


async def send_error(notifier: WebhookNotifier, url: str) -> WebhookError:
    async with asyncio.timeout(10):
        with pytest.raises(WebhookError) as info:
            await notifier.send(url, payload())
    return info.value


async def test_delivers_the_payload_with_idempotency_key(
        notifier: WebhookNotifier, receiver: Receiver) -> None:
    body = payload(seq=7)
    async with asyncio.timeout(10):
        await notifier.send(f"{receiver.url}/ok", body)
    assert receiver.bodies == [body]
    headers = receiver.headers[0]
    assert headers["Idempotency-Key"] == f"{body['fleetdeck']['alert_id']}:7"
    assert headers["Content-Type"] == "application/json"


async def test_one_session_serves_many_sends(
        notifier: WebhookNotifier, receiver: Receiver) -> None:
    async with asyncio.timeout(10):
        await asyncio.gather(*(notifier.send(f"{receiver.url}/ok", payload(seq))
                               for seq in range(1, 6)))
    assert sorted(b["fleetdeck"]["seq"] for b in receiver.bodies) == [1, 2, 3, 4, 5]


async def test_server_error_is_retryable(notifier: WebhookNotifier, receiver: Receiver) -> None:
    err = await send_error(notifier, f"{receiver.url}/fail")
    assert (err.status, err.retryable) == (500, True)
    assert "HTTP 500" in str(err)


async def test_client_error_is_not_retryable(
        notifier: WebhookNotifier, receiver: Receiver) -> None:
    err = await send_error(notifier, f"{receiver.url}/bad")
    assert (err.status, err.retryable) == (400, False)


async def test_too_many_requests_is_retryable_with_retry_after(
        notifier: WebhookNotifier, receiver: Receiver) -> None:
    err = await send_error(notifier, f"{receiver.url}/busy")
    assert (err.status, err.retryable, err.retry_after_s) == (429, True, 0.0)


async def test_redirect_is_not_followed(notifier: WebhookNotifier, receiver: Receiver) -> None:
    err = await send_error(notifier, f"{receiver.url}/redirect")
    assert (err.status, err.retryable) == (302, False)
    assert receiver.paths == ["/redirect"]  # the POST was not replayed as a GET elsewhere


async def test_closed_port_is_retryable(notifier: WebhookNotifier) -> None:
    err = await send_error(notifier, f"http://127.0.0.1:{free_port()}/hook")
    assert (err.status, err.retryable) == (None, True)


async def test_slow_receiver_times_out_retryable(
        notifier: WebhookNotifier, receiver: Receiver) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    err = await send_error(notifier, f"{receiver.url}/slow")
    assert (err.status, err.retryable) == (None, True)
    assert loop.time() - started < 5  # gave up near timeout_s, not when the receiver answered
    assert receiver.paths == ["/slow"]


async def test_bad_input_is_a_webhook_error(notifier: WebhookNotifier) -> None:
    for url in ("ftp://127.0.0.1/hook", "not a url"):
        err = await send_error(notifier, url)
        assert err.retryable is False
    async with asyncio.timeout(10):
        with pytest.raises(WebhookError, match="idempotency_key"):
            await notifier.send("http://127.0.0.1:1/hook", {"receiver": "x"})


async def test_deliver_retries_until_accepted(
        notifier: WebhookNotifier, receiver: Receiver) -> None:
    async with asyncio.timeout(10):
        assert await notifier.deliver(f"{receiver.url}/flaky", payload()) is True
    assert len(receiver.bodies) == 3  # 500, 500, 200
    assert len({h["Idempotency-Key"] for h in receiver.headers}) == 1
    assert (notifier.delivered, notifier.given_up) == (1, 0)


async def test_deliver_gives_up_after_max_attempts(
        notifier: WebhookNotifier, receiver: Receiver) -> None:
    async with asyncio.timeout(10):
        assert await notifier.deliver(f"{receiver.url}/unavailable", payload()) is False
    assert len(receiver.bodies) == notifier.settings.max_attempts
    assert (notifier.delivered, notifier.given_up) == (0, 1)


async def test_deliver_does_not_retry_a_refusal(
        notifier: WebhookNotifier, receiver: Receiver) -> None:
    async with asyncio.timeout(10):
        assert await notifier.deliver(f"{receiver.url}/bad", payload()) is False
    assert len(receiver.bodies) == 1
    assert notifier.given_up == 1
