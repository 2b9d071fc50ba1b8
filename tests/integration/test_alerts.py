"""Alerting through the real stack: rules from the API, the Faust worker's state machine,
the alert stream, acknowledgements, silences, and the SQL history."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson

from tests.conftest import Admin, FleetFactory, eventually, sim_servers


def rule_id(name: str) -> str:
    return f"t-{name}-{uuid.uuid4().hex[:6]}"


async def create_rule(api: httpx.AsyncClient, **rule: Any) -> dict[str, Any]:
    resp = await api.post("/api/v1/alerts/rules", json=rule)
    assert resp.status_code == 201, resp.text
    return dict(resp.json()["rule"])


async def alert_of(api: httpx.AsyncClient, server: str, rule: str) -> dict[str, Any] | None:
    resp = await api.get("/api/v1/alerts", params={"server": server, "rule": rule})
    assert resp.status_code == 200, resp.text
    found = resp.json()["alerts"]
    return found[0] if found else None


async def in_state(api: httpx.AsyncClient, server: str, rule: str,
                   state: str) -> dict[str, Any] | None:
    found = await alert_of(api, server, rule)
    return found if found and found["state"] == state else None


async def alert_events(api: httpx.AsyncClient, server: str, rule: str, want: set[str],
                       into: list[dict[str, Any]]) -> None:
    """Collect ``alert`` events of ``rule`` on ``server`` from the SSE stream until every
    transition in ``want`` was seen."""
    current: dict[str, Any] = {}
    async with api.stream("GET", "/api/v1/alerts/stream") as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line:
                field, _, value = line.partition(":")
                current[field] = value.strip()
                continue
            if current.get("event") == "alert":
                data = orjson.loads(current["data"])
                if data["server_id"] == server and data["rule_id"] == rule:
                    into.append(data)
                    if want <= {e["transition"] for e in into}:
                        return
            current = {}


async def test_alert_fires_is_acknowledged_and_resolves(
        api: httpx.AsyncClient, fleet: FleetFactory, admin: Admin) -> None:
    sim = sim_servers(1)[0]
    server = sim.server_id
    rule = rule_id("cpu")
    await create_rule(api, id=rule, name="CPU test", expr="cpu.total > 95 for 2s", clear=50,
                      severity="critical", match=[{"label": "server_id", "value": server}])
    seen: list[dict[str, Any]] = []
    watcher = asyncio.create_task(alert_events(api, server, rule, {"pending", "firing"}, seen))
    await asyncio.sleep(0.5)
    await fleet([sim])
    sim.force("critical", 600)
    firing = await eventually(lambda: in_state(api, server, rule, "firing"), timeout=60)
    assert firing["severity"] == "critical" and firing["value"] > 95
    assert firing["condition"] == "cpu.total > 95 for 2s"
    async with asyncio.timeout(20):
        await watcher
    assert [e["transition"] for e in seen][:2] == ["pending", "firing"]
    assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)

    alert = firing["alert_id"]
    no_comment = await api.post(f"/api/v1/alerts/{alert}/ack", json={})
    assert no_comment.status_code == 400 and "comment" in no_comment.json()["error"]["message"]
    blank = await api.post(f"/api/v1/alerts/{alert}/ack", json={"comment": " "})
    assert blank.status_code == 400
    instant = await api.post(f"/api/v1/alerts/{alert}/ack",
                             json={"comment": "c", "expires_s": 0})
    assert instant.status_code == 400 and "expires_s" in instant.json()["error"]["message"]
    ack = await api.post(f"/api/v1/alerts/{alert}/ack",
                         json={"comment": "looking at it", "expires_s": "1h"})
    assert ack.status_code == 202, ack.text
    acked = await eventually(lambda: in_state(api, server, rule, "acknowledged"), timeout=20)
    assert acked["acked_by"] == admin.username and acked["ack_comment"] == "looking at it"
    assert acked["ack_expires_at"] is not None
    again = await api.post(f"/api/v1/alerts/{alert}/ack", json={"comment": "x"})
    assert again.status_code == 409 and admin.username in again.json()["error"]["message"]

    sim.force("ok", 600)
    resolved = await eventually(lambda: in_state(api, server, rule, "resolved"), timeout=30)
    assert resolved["acked_by"] is None and resolved["previous"] == "acknowledged"
    late = await api.post(f"/api/v1/alerts/{alert}/ack", json={"comment": "c"})
    assert late.status_code == 409

    detail = (await api.get(f"/api/v1/alerts/{alert}")).json()
    steps = [(h["transition"], h["actor"], h["reason"]) for h in detail["history"]]
    assert steps == [("pending", None, None), ("firing", None, None),
                     ("acknowledged", admin.username, "looking at it"),
                     ("resolved", None, None)]
    marks = (await api.get(f"/api/v1/servers/{server}/alert-events",
                           params={"range": "15m"})).json()["events"]
    assert [m["transition"] for m in marks if m["rule_id"] == rule] == [s[0] for s in steps]


async def test_rule_changes_apply_without_a_restart(
        api: httpx.AsyncClient, fleet: FleetFactory) -> None:
    sim = sim_servers(1)[0]
    server = sim.server_id
    rule = rule_id("mem")
    scope = [{"label": "server_id", "value": server}]
    await create_rule(api, id=rule, expr="mem.used_pct > 1000", match=scope)
    await fleet([sim])
    await eventually(lambda: api.get(f"/api/v1/servers/{server}"), timeout=60)
    await asyncio.sleep(3)  # samples flow, the rule cannot fire
    assert await alert_of(api, server, rule) is None

    changed = await api.put(f"/api/v1/alerts/rules/{rule}",
                            json={"expr": "mem.used_pct >= 0", "match": scope})
    assert changed.status_code == 200, changed.text
    await eventually(lambda: in_state(api, server, rule, "firing"), timeout=20)

    assert (await api.delete(f"/api/v1/alerts/rules/{rule}")).status_code == 204
    gone = await eventually(lambda: in_state(api, server, rule, "resolved"), timeout=40)
    assert gone["transition"] == "rule_removed"
    assert (await api.get(f"/api/v1/alerts/rules/{rule}")).status_code == 404


async def test_silenced_alert_is_shown_marked_and_not_notified(
        api: httpx.AsyncClient, fleet: FleetFactory) -> None:
    sim = sim_servers(1)[0]
    server = sim.server_id
    rule = rule_id("load")
    created = await api.post("/api/v1/alerts/silences", json={
        "matchers": [{"label": "server_id", "value": server}], "duration_s": "10m",
        "comment": "maintenance window"})
    assert created.status_code == 201, created.text
    silence = created.json()["silence"]
    await create_rule(api, id=rule, expr="cpu.total >= 0",
                      match=[{"label": "server_id", "value": server}])
    await fleet([sim])
    firing = await eventually(lambda: in_state(api, server, rule, "firing"), timeout=60)
    assert firing["silenced_by"] == [silence["id"]] and firing["silenced"]
    assert not firing["notify"]
    listed = (await api.get("/api/v1/alerts/silences")).json()["silences"]
    assert silence["id"] in {s["id"] for s in listed}

    expired = await api.delete(f"/api/v1/alerts/silences/{silence['id']}")
    assert expired.status_code == 200

    async def unsilenced() -> dict[str, Any] | None:
        found = await alert_of(api, server, rule)
        return found if found and found["transition"] == "unsilenced" else None

    again = await eventually(unsilenced, timeout=20)
    assert again["silenced_by"] == [] and again["state"] == "firing"
    active = (await api.get("/api/v1/alerts/silences")).json()["silences"]
    assert silence["id"] not in {s["id"] for s in active}


async def test_bad_rules_and_requests_get_clear_errors(api: httpx.AsyncClient) -> None:
    async def error(resp: httpx.Response, status: int) -> str:
        assert resp.status_code == status, resp.text
        return str(resp.json()["error"]["message"])

    rules = "/api/v1/alerts/rules"
    assert "channel" in await error(await api.post(rules, json={"id": "x", "expr":
                                                                  "cpu.nope > 1"}), 400)
    assert "expr" in await error(await api.post(rules, json={"id": "x", "expr": "cpu >"}), 400)
    assert "clear" in await error(await api.post(rules, json={
        "id": "x", "channel": "cpu.total", "threshold": 50, "clear": 60}), 400)
    assert "for_s" in await error(await api.post(rules, json={
        "id": "x", "expr": "cpu.total > 1", "for": "soon"}), 400)
    assert "severity" in await error(await api.post(rules, json={
        "id": "x", "expr": "cpu.total > 1", "severity": "urgent"}), 400)
    assert "JSON" in await error(await api.post(rules, content=b"{nope", headers={
        "content-type": "application/json"}), 400)
    # what a page on another site can send without asking: refused
    assert "application/json" in await error(await api.post(
        rules, content=b'{"id": "x", "expr": "cpu.total > 1"}',
        headers={"content-type": "text/plain"}), 415)
    await error(await api.post(rules, json={"id": "x", "expr": "cpu.total > 1"},
                               headers={"origin": "http://evil.example"}), 403)
    assert "ends_at" in await error(await api.post("/api/v1/alerts/silences", json={
        "matchers": [{"label": "server_id", "value": "x"}], "duration_s": 60,
        "ends_at": "2099-01-01T00:00:00Z", "comment": "c"}), 400)
    assert "ends_at" in await error(await api.post("/api/v1/alerts/silences", json={
        "matchers": [{"label": "server_id", "value": "x"}], "ends_at": "2999-01-01T00:00:00Z",
        "comment": "c"}), 400)
    rule = rule_id("dup")
    await create_rule(api, id=rule, expr="cpu.total > 99")
    assert "exists" in await error(await api.post(rules, json={"id": rule,
                                                                "expr": "cpu.total > 1"}), 409)
    assert "differs" in await error(await api.put(f"{rules}/{rule}", json={
        "id": "other", "expr": "cpu.total > 1"}), 400)
    await error(await api.post("/api/v1/alerts/0123abcd/ack",
                               json={"comment": "b"}), 404)
    assert "state" in await error(await api.get("/api/v1/alerts",
                                                params={"state": "burning"}), 400)
    assert "comment" in await error(await api.post("/api/v1/alerts/silences", json={
        "matchers": [{"label": "server_id", "value": "x"}], "duration_s": 60}), 400)
    assert "matchers" in await error(await api.post("/api/v1/alerts/silences", json={
        "matchers": [], "duration_s": 60, "comment": "c"}), 400)
    await error(await api.delete("/api/v1/alerts/silences/abc"), 404)
    assert "rules file" in await error(await api.put(f"{rules}/cpu-high", json={
        "expr": "cpu.total > 99"}), 409)  # shipped rules are changed in the file
    assert "rules file" in await error(await api.delete(f"{rules}/cpu-high"), 409)
    doc = (await api.get("/api/v1/openapi.json")).json()
    for path in ("/api/v1/alerts", "/api/v1/alerts/{id}/ack", "/api/v1/alerts/{id}/unack",
                 "/api/v1/alerts/silences", "/api/v1/alerts/rules", "/api/v1/alerts/stream"):
        assert path in doc["paths"], path
