"""Tenancy and roles on every route: nothing of one tenant is visible to, or changeable by,
another; anonymous callers get 401 and pages send them to sign in; every alert mutation is
audited with the signed-in actor."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from connectors.victoriametrics import VMClient, VMSettings
from fleetdeck.stack import EmbeddedStack
from schemas import CHANNELS, RedisKeys
from schemas.identity import Role
from tests.conftest import Admin, FleetFactory, Tokens, bearer, eventually, sim_servers
from tests.integration.test_alerts import create_rule, in_state, rule_id

pytestmark = pytest.mark.integration

API_ROUTES = ["/api/v1/servers", "/api/v1/servers/x", "/api/v1/servers/x/series",
              "/api/v1/stream", "/api/v1/channels", "/api/v1/alerts", "/api/v1/alerts/abc",
              "/api/v1/alerts/stream", "/api/v1/alerts/silences", "/api/v1/alerts/rules",
              "/api/v1/alerts/rules/x", "/api/v1/servers/x/alert-events", "/api/v1/commands",
              "/api/v1/audit", "/api/v1/tokens", "/api/v1/me"]


@pytest.mark.parametrize("path", API_ROUTES)
async def test_anonymous_callers_get_401(anon: httpx.AsyncClient, path: str) -> None:
    resp = await anon.get(path)
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("path", ["/", "/alerts", "/servers/web-1"])
async def test_pages_send_anonymous_callers_to_sign_in(anon: httpx.AsyncClient,
                                                       path: str) -> None:
    resp = await anon.get(path, params={"range": "1h"})
    assert resp.status_code == 303
    assert resp.headers["location"].startswith("/login?next=")
    assert path.replace("/", "%2F") in resp.headers["location"]


async def read_stream(client: httpx.AsyncClient, url: str, count: int,
                      headers: dict[str, str]) -> list[dict[str, Any]]:
    """The data of the first ``count`` events of an SSE stream (bounded in time)."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(30), client.stream("GET", url, headers=headers) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data:"):
                found.append(orjson.loads(line[5:]))
                if len(found) >= count:
                    break
    return found


async def test_another_tenant_sees_none_of_our_servers_or_samples(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens) -> None:
    beta = await token("beta", Role.ADMIN, "bea")
    ours, theirs = sim_servers(2)
    theirs.tenant = "beta"
    await fleet([ours, theirs])

    async def listed(headers: dict[str, str] | None = None) -> set[str]:
        servers = (await api.get("/api/v1/servers", headers=headers)).json()["servers"]
        return {s["server_id"] for s in servers}

    await eventually(lambda: _has(listed(), ours.server_id))
    await eventually(lambda: _has(listed(bearer(beta)), theirs.server_id))
    assert theirs.server_id not in await listed()
    assert ours.server_id not in await listed(bearer(beta))
    for path in (f"/api/v1/servers/{ours.server_id}",
                 f"/api/v1/servers/{ours.server_id}/series",
                 f"/api/v1/servers/{ours.server_id}/alert-events",
                 f"/api/v1/stream?server={ours.server_id}"):
        resp = await api.get(path, headers=bearer(beta))
        assert resp.status_code == 404, (path, resp.text)
    page = await api.get(f"/servers/{ours.server_id}", headers=bearer(beta))
    assert page.status_code == 404
    events = await read_stream(api, "/api/v1/stream", 6, bearer(beta))
    assert {e.get("tenant") for e in events} == {"beta"}


async def _has(found: Any, wanted: str) -> bool:
    return wanted in await found


async def test_alerts_silences_and_rules_stay_in_their_tenant(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens, admin: Admin) -> None:
    beta = bearer(await token("beta", Role.ADMIN, "bea"))
    viewer = bearer(await token("default", Role.VIEWER, "vic"))
    [sim] = sim_servers(1)
    rule = rule_id("tenancy")
    created = await create_rule(api, id=rule, expr="cpu.total >= 0",
                                match=[{"label": "server_id", "value": sim.server_id}])
    assert {"label": "tenant", "op": "=", "value": "default"} in created["match"]
    await fleet([sim])
    firing = await eventually(lambda: in_state(api, sim.server_id, rule, "firing"), timeout=60)
    alert = firing["alert_id"]

    listed = (await api.get("/api/v1/alerts", headers=beta)).json()["alerts"]
    assert alert not in {a["alert_id"] for a in listed}
    assert (await api.get(f"/api/v1/alerts/{alert}", headers=beta)).status_code == 404
    assert (await api.post(f"/api/v1/alerts/{alert}/ack", json={"comment": "mine now"},
                           headers=beta)).status_code == 404
    refused = await api.post(f"/api/v1/alerts/{alert}/ack", json={"comment": "x"},
                             headers=viewer)
    assert refused.status_code == 403 and "operator" in refused.json()["error"]["message"]
    rules = (await api.get("/api/v1/alerts/rules", headers=beta)).json()["rules"]
    assert rule not in {r["id"] for r in rules}
    assert (await api.get(f"/api/v1/alerts/rules/{rule}", headers=beta)).status_code == 404
    assert (await api.put(f"/api/v1/alerts/rules/{rule}", json={"expr": "cpu.total > 1"},
                          headers=beta)).status_code == 404
    assert (await api.delete(f"/api/v1/alerts/rules/{rule}", headers=beta)).status_code == 404
    assert (await api.post("/api/v1/alerts/rules", json={"id": rule_id("v"),
                           "expr": "cpu.total > 1"}, headers=viewer)).status_code == 403

    window = {"duration_s": 600, "comment": "maintenance"}
    poached = await api.post("/api/v1/alerts/silences", headers=beta, json={
        **window, "matchers": [{"label": "tenant", "value": "default"}]})
    assert poached.status_code == 400 and "own tenant" in poached.json()["error"]["message"]
    ours = await api.post("/api/v1/alerts/silences", json={
        **window, "matchers": [{"label": "server_id", "value": sim.server_id}]})
    assert ours.status_code == 201, ours.text
    silence = ours.json()["silence"]
    assert silence["created_by"] == admin.username
    theirs = (await api.get("/api/v1/alerts/silences", headers=beta)).json()["silences"]
    assert silence["id"] not in {s["id"] for s in theirs}
    assert (await api.delete(f"/api/v1/alerts/silences/{silence['id']}",
                             headers=beta)).status_code == 404
    assert (await api.delete(f"/api/v1/alerts/silences/{silence['id']}")).status_code == 200

    ack = await api.post(f"/api/v1/alerts/{alert}/ack", json={"comment": "on it"})
    assert ack.status_code == 202, ack.text

    async def audited() -> dict[str, str] | None:
        records = (await api.get("/api/v1/audit", params={"actor": admin.username})).json()
        found = {(r["event"]["action"], r["event"]["target"]) for r in records["records"]}
        wanted = {("rule.create", f"rule:{rule}"), ("alert.ack", f"alert:{alert}"),
                  ("silence.create", f"silence:{silence['id']}"),
                  ("silence.expire", f"silence:{silence['id']}")}
        return None if not wanted <= found else {"ok": "yes"}

    await eventually(audited, timeout=20)
    beta_audit = (await api.get("/api/v1/audit", headers=beta)).json()["records"]
    assert all(r["event"]["tenant"] == "beta" for r in beta_audit)


async def test_tokens_and_sessions_stop_working_once_revoked(
        api: httpx.AsyncClient, anon: httpx.AsyncClient, admin: Admin) -> None:
    made = await api.post("/api/v1/tokens", json={"name": "ci-bot", "role": "viewer",
                                                  "ttl_s": 3600})
    assert made.status_code == 201, made.text
    text, token_id = made.json()["token"], made.json()["id"]
    assert (await anon.get("/api/v1/servers", headers=bearer(text))).status_code == 200
    viewer_tokens = await anon.get("/api/v1/tokens", headers=bearer(text))
    assert viewer_tokens.status_code == 403  # a viewer cannot see tokens
    assert (await api.delete(f"/api/v1/tokens/{token_id}")).status_code == 200
    refused = await anon.get("/api/v1/servers", headers=bearer(text))
    assert refused.status_code == 401  # at once, although the token was just used
    wrong = text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB")
    assert (await anon.get("/api/v1/servers", headers=bearer(wrong))).status_code == 401

    signed = await anon.post("/api/v1/session", json={"username": admin.username,
                                                      "password": admin.password})
    assert signed.status_code == 200, signed.text
    me = await anon.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["me"]["name"] == admin.username
    assert (await anon.delete("/api/v1/session")).status_code == 200
    assert (await anon.get("/api/v1/me")).status_code == 401
    bad = await anon.post("/api/v1/session", json={"username": admin.username,
                                                   "password": "not-it"})
    assert bad.status_code == 401 and "wrong user name or password" in bad.text


async def test_series_hold_only_the_callers_tenants_points(
        api: httpx.AsyncClient, stack: EmbeddedStack, token: Tokens) -> None:
    """The series query selects the caller's tenant: a server that moved to our tenant shows
    none of the points it sent while it was another's, and a quiet server of ours answers
    with no series rather than 404."""
    beta = bearer(await token("beta", Role.ADMIN, "bes"))
    moved, quiet = "moved-from-beta", "quiet-server"
    now = int(time.time())
    vm = VMClient(VMSettings(url=stack.endpoints.vm_url))
    try:
        await vm.import_json([orjson.dumps({
            "metric": {"__name__": CHANNELS["cpu.total"].metric, "server": moved,
                       "tenant": "beta"},
            "values": [42.0] * 60, "timestamps": [(now - 60 + i) * 1000 for i in range(60)]})])
    finally:
        await vm.close()
    async with httpx.AsyncClient() as client:
        (await client.get(f"{stack.endpoints.vm_url}/internal/force_flush")).raise_for_status()
    redis = aioredis.from_url(stack.endpoints.redis_url)
    try:
        await redis.hset(RedisKeys(stack.endpoints.redis_prefix).servers, mapping={
            sid: orjson.dumps({"server_id": sid, "hostname": sid, "tenant": "default",
                               "health": "OK", "reasons": []}) for sid in (moved, quiet)})
    finally:
        await redis.aclose()

    async def series(server_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await api.get(f"/api/v1/servers/{server_id}/series",
                             params={"channels": "cpu.total", "range": "15m"}, headers=headers)

    async def beta_sees_its_points() -> bool:
        resp = await series(moved, beta)
        return resp.status_code == 200 and bool(resp.json()["series"])

    assert await eventually(beta_sees_its_points)  # beta wrote them: they stay beta's
    for server_id in (moved, quiet):
        resp = await series(server_id)
        assert resp.status_code == 200, resp.text
        assert resp.json()["series"] == []
    assert (await series(quiet, beta)).status_code == 404
