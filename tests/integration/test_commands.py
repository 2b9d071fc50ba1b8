"""The command bus through the real stack: API → signed command on the broker → in-process
agents (the real executor and listener) → reports → the control worker → SQL and the API.
Also tenancy, the agent's refusals, approvals and the audit log's hash chain."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.commands import CommandListener, EventSender
from agent.executor import Executor, ReplayGuard
from connectors.kafka import KafkaSettings, producer
from connectors.keystore import load_or_create
from connectors.sql import SQLStore
from fleetdeck.stack import EmbeddedStack
from schemas.commands import Command, CommandRecord, CommandStatus, PingParams, SignedCommand
from schemas.envelope import utcnow
from schemas.identity import Role
from schemas.topics import COMMANDS
from tests.conftest import FleetFactory, Tokens, bearer, eventually, sim_servers

pytestmark = pytest.mark.integration



@contextlib.asynccontextmanager
async def command_agents(stack: EmbeddedStack, servers: dict[str, str],
                         state: Path) -> AsyncIterator[Executor]:
    """The agents' command side for ``servers`` (id -> tenant), in this process."""
    key = load_or_create(Path(stack.endpoints.keys_dir))
    kafka = KafkaSettings(bootstrap_servers=stack.endpoints.kafka)
    sender = EventSender(kafka)
    executor = Executor({key.key_id: key.public}, ReplayGuard(state / "seen.log"), sender)
    listener = CommandListener(kafka, servers, executor,
                               group_id=f"test-agents-{uuid.uuid4().hex[:8]}")
    task = asyncio.create_task(listener.run())
    try:
        async with asyncio.timeout(20):
            await listener.ready.wait()
        yield executor
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await executor.stop()
        await sender.close()


async def fleet_of(fleet: FleetFactory, api: httpx.AsyncClient, count: int,
                   tenant: str = "default", as_token: str | None = None) -> list[str]:
    """``count`` simulated servers of ``tenant``, once the API lists them (to ``api``'s
    caller, or to ``as_token``'s)."""
    servers = sim_servers(count)
    for s in servers:
        s.tenant = tenant
    await fleet(servers)
    ids = [s.server_id for s in servers]

    async def visible() -> bool:
        resp = await api.get("/api/v1/servers",
                             headers=None if as_token is None else bearer(as_token))
        seen = {s["server_id"] for s in resp.json()["servers"]}
        return set(ids) <= seen

    await eventually(visible)
    return ids


async def send(api: httpx.AsyncClient, auth: str, server: str, **extra: Any) -> httpx.Response:
    body = {"server_id": server, "type": "PING", "params": {"payload": "hi"},
            "reason": "checking the agent", **extra}
    return await api.post("/api/v1/commands", json=body, headers=bearer(auth))


async def status_of(api: httpx.AsyncClient, auth: str, command_id: str) -> dict[str, Any]:
    resp = await api.get(f"/api/v1/commands/{command_id}", headers=bearer(auth))
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["command"])


async def reaches(api: httpx.AsyncClient, auth: str, command_id: str,
                  status: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        record = await status_of(api, auth, command_id)
        return record if record["status"] == status else None

    return dict(await eventually(check, timeout=20))


async def test_ping_is_signed_acked_run_and_audited(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens, tmp_path: Path,
        stack: EmbeddedStack) -> None:
    [server] = await fleet_of(fleet, api, 1)
    operator = await token("default", Role.OPERATOR, "olivia")
    async with command_agents(stack, {server: "default"}, tmp_path):
        resp = await send(api, operator, server)
        assert resp.status_code == 202, resp.text
        created = resp.json()["command"]
        assert created["status"] == "queued" and created["command"]["actor"] == "olivia"
        done = await reaches(api, operator, created["command"]["id"], "succeeded")
    assert done["result"]["pong"] == "hi"
    assert [h["status"] for h in done["history"]] == ["queued", "acked", "running", "succeeded"]
    assert done["acked_at"] is not None
    admin = await token("default", Role.ADMIN, "ada")

    async def audited() -> list[dict[str, Any]]:
        resp = await api.get("/api/v1/audit", headers=bearer(admin),
                             params={"target": f"command:{created['command']['id']}"})
        assert resp.status_code == 200, resp.text
        return list(resp.json()["records"])

    async def both() -> list[dict[str, Any]] | None:
        records = await audited()
        return records if len(records) >= 2 else None

    records = {r["event"]["action"]: r["event"] for r in await eventually(both)}
    assert set(records) == {"command.create", "command.finished"}
    event = records["command.create"]
    assert (event["action"], event["actor"], event["reason"]) == (
        "command.create", "olivia", "checking the agent")
    finished = records["command.finished"]
    assert (finished["actor"], finished["reason"], finished["outcome"]) == (
        f"agent:{server}", "checking the agent", "succeeded")
    assert finished["after"]["status"] == "succeeded" and finished["after"]["type"] == "PING"


async def test_bad_requests_get_clear_errors(api: httpx.AsyncClient, anon: httpx.AsyncClient,
                                             fleet: FleetFactory, token: Tokens) -> None:
    [server] = await fleet_of(fleet, api, 1)
    operator = await token("default", Role.OPERATOR, "olivia")
    viewer = await token("default", Role.VIEWER, "vic")
    cases = [
        (await anon.post("/api/v1/commands", json={}), 401, "sign in"),
        (await send(api, viewer, server), 403, "needs the operator role"),
        (await send(api, operator, server, reason=""), 400, "reason"),
        (await send(api, operator, server, type="REBOOT"), 400, "unknown command type"),
        (await send(api, operator, server, params={"payload": "x", "rm": "-rf"}), 400,
         "params.PING.rm"),
        (await send(api, operator, server, surprise=1), 400, "surprise"),
        (await send(api, operator, server, params={"type": "FILE_LIST"}), 400, "params.type"),
        (await send(api, operator, "no-such-server"), 404, "no server"),
        (await api.get("/api/v1/commands/xyz", headers=bearer(operator)), 400, "command id"),
        (await api.get("/api/v1/commands", headers=bearer("fdt_nope_nope")), 401, "unknown"),
    ]
    for resp, status, words in cases:
        assert resp.status_code == status, resp.text
        assert words in resp.json()["error"]["message"], resp.text


async def test_tenants_cannot_see_or_command_each_other(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens, tmp_path: Path,
        stack: EmbeddedStack) -> None:
    alpha = await token("default", Role.ADMIN, "ann")
    beta = await token("beta", Role.ADMIN, "bea")
    [ours] = await fleet_of(fleet, api, 1, tenant="default")
    [theirs] = await fleet_of(fleet, api, 1, tenant="beta", as_token=beta)
    async with command_agents(stack, {ours: "default", theirs: "beta"}, tmp_path):
        mine = (await send(api, alpha, ours)).json()["command"]["command"]["id"]
        await reaches(api, alpha, mine, "succeeded")
    assert (await send(api, beta, ours)).status_code == 404
    assert (await send(api, alpha, theirs)).status_code == 404
    resp = await api.get(f"/api/v1/commands/{mine}", headers=bearer(beta))
    assert resp.status_code == 404
    listed = (await api.get("/api/v1/commands", headers=bearer(beta))).json()["commands"]
    assert mine not in {c["command"]["id"] for c in listed}
    audit = (await api.get("/api/v1/audit", headers=bearer(beta))).json()["records"]
    assert all(r["event"]["tenant"] == "beta" for r in audit)
    approve = await api.post(f"/api/v1/commands/{mine}/approve", json={"comment": "x"},
                             headers=bearer(beta))
    assert approve.status_code == 404


async def queued(sql: SQLStore, server: str, **changes: Any) -> Command:
    """A command recorded as queued, as the API would have it (for forged deliveries)."""
    now = utcnow()
    fields: dict[str, Any] = {
        "tenant": "default", "server_id": server, "type": "PING", "params": PingParams(),
        "actor": "olivia", "reason": "testing refusals", "issued_at": now,
        "expires_at": now + timedelta(minutes=1), **changes}
    command = Command(**fields)
    record = CommandRecord(command=command, status=CommandStatus.QUEUED, created_at=now,
                           updated_at=now)
    await sql.create_command(record)
    return command


async def deliver(stack: EmbeddedStack, key: str, signed: SignedCommand, times: int = 1) -> None:
    prod = producer(KafkaSettings(bootstrap_servers=stack.endpoints.kafka), linger_ms=0)
    await prod.start()
    try:
        for _ in range(times):
            await prod.send_and_wait(COMMANDS.name, signed.model_dump_json().encode(),
                                     key=key.encode())
    finally:
        await prod.stop()


async def test_agents_refuse_forged_expired_misrouted_and_replayed_commands(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens, sql: SQLStore,
        tmp_path: Path, stack: EmbeddedStack) -> None:
    a, b = await fleet_of(fleet, api, 2)
    viewer = await token("default", Role.VIEWER, "vic")
    real = load_or_create(Path(stack.endpoints.keys_dir))
    forger = Ed25519PrivateKey.generate()
    async with command_agents(stack, {a: "default", b: "default"}, tmp_path) as executor:
        forged = await queued(sql, a)
        await deliver(stack, a, SignedCommand.sign(forged, forger, real.key_id))
        past = utcnow() - timedelta(minutes=10)
        expired = await queued(sql, a, issued_at=past, expires_at=past + timedelta(minutes=1))
        await deliver(stack, a, SignedCommand.sign(expired, real.private, real.key_id))
        misrouted = await queued(sql, a)  # bound to a, delivered to b
        await deliver(stack, b, SignedCommand.sign(misrouted, real.private, real.key_id))
        twice = await queued(sql, b)
        await deliver(stack, b, SignedCommand.sign(twice, real.private, real.key_id), times=2)

        for command, reason in [(forged, "bad signature"),
                                (misrouted, f"bound to server {a!r}, not {b!r}")]:
            record = await reaches(api, viewer, command.id, "rejected")
            assert reason in record["message"], record

        async def refused_as_expired() -> dict[str, Any] | None:
            # The control plane's sweep may give the expired command up first (status
            # expired); the agent's refusal is then a note in its history.
            record = await status_of(api, viewer, expired.id)
            refusals = [record] if record["status"] == "rejected" else [
                h for h in record["history"] if h["status"] == "delivery-rejected"]
            return next((r for r in refusals if "expired at" in r["message"]), None)

        await eventually(refused_as_expired, timeout=20)
        done = await reaches(api, viewer, twice.id, "succeeded")

        async def noted() -> list[dict[str, Any]]:
            record = await status_of(api, viewer, twice.id)
            return [h for h in record["history"] if h["status"] == "delivery-rejected"]

        [note] = await eventually(noted)
        assert "replayed" in note["message"]
        assert executor.counts["succeeded"] == 1  # ran once though delivered twice
        assert done["status"] == "succeeded"


async def test_policies_are_changed_with_a_reason_and_cover_what_a_command_also_does(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens) -> None:
    admin = await token("delta", Role.ADMIN, "dora")
    [server] = await fleet_of(fleet, api, 1, tenant="delta", as_token=admin)
    url = "/api/v1/policies/FILE_DELETE"
    for body, words in [({"requires_approval": True}, "reason"),
                        ({"requires_approval": "yes", "reason": "deletes need a second pair"},
                         "requires_approval"),
                        ({"requires_approval": True, "reason": "ok\x1b[2J"}, "control")]:
        resp = await api.put(url, json=body, headers=bearer(admin))
        assert resp.status_code == 400 and words in resp.text, resp.text
    resp = await api.put(url, json={"requires_approval": True,
                                    "reason": "deletes need a second pair of eyes"},
                         headers=bearer(admin))
    assert resp.status_code == 200, resp.text

    async def move(overwrite: bool) -> dict[str, Any]:
        resp = await api.post("/api/v1/commands", headers=bearer(admin), json={
            "server_id": server, "type": "FILE_MOVE", "reason": "tidy up",
            "params": {"path": "a.txt", "destination": "b.txt", "overwrite": overwrite}})
        assert resp.status_code == 202, resp.text
        return dict(resp.json()["command"])

    # a move that may replace a file deletes it: the delete policy applies
    assert (await move(True))["status"] == "pending-approval"
    assert (await move(False))["status"] == "queued"
    resp = await api.post("/api/v1/commands", headers=bearer(admin), json={
        "server_id": server, "type": "PING", "reason": "why\x00not", "params": {}})
    assert resp.status_code == 400 and "control characters" in resp.text, resp.text
    resp = await api.post("/api/v1/commands", headers=bearer(admin), json={
        "server_id": server, "type": "PING", "reason": "checking", "ttl_s": "60"})
    assert resp.status_code == 400 and "ttl_s" in resp.text, resp.text

    async def audited() -> dict[str, Any] | None:
        resp = await api.get("/api/v1/audit", headers=bearer(admin),
                             params={"target": "policy:FILE_DELETE"})
        records = resp.json()["records"]
        return records[0]["event"] if records else None

    event = await eventually(audited)
    assert event["action"] == "policy.set" and event["actor"] == "dora"
    assert event["reason"] == "deletes need a second pair of eyes"
    assert event["after"] == {"requires_approval": True}
    spec = (await api.get("/api/v1/openapi.json")).json()
    schema = spec["paths"]["/api/v1/commands"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert {"PING", "FILE_MOVE", "CRON_CREATE"} <= set(schema["properties"]["type"]["enum"])


async def test_approval_needs_another_approver(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens, sql: SQLStore,
        tmp_path: Path, stack: EmbeddedStack) -> None:
    requester = await token("gamma", Role.APPROVER, "rita")
    [server] = await fleet_of(fleet, api, 1, tenant="gamma", as_token=requester)
    other = await token("gamma", Role.APPROVER, "otto")
    operator = await token("gamma", Role.OPERATOR, "opal")
    await sql.set_policy("gamma", "PING", True)
    async with command_agents(stack, {server: "gamma"}, tmp_path):
        created = (await send(api, requester, server)).json()["command"]
        command_id = created["command"]["id"]
        assert created["status"] == "pending-approval"
        for who, status, words in [(requester, 403, "own command"),
                                   (operator, 403, "approver role")]:
            resp = await api.post(f"/api/v1/commands/{command_id}/approve",
                                  json={"comment": "ok"}, headers=bearer(who))
            assert resp.status_code == status and words in resp.text, resp.text
        resp = await api.post(f"/api/v1/commands/{command_id}/approve", json={},
                              headers=bearer(other))
        assert resp.status_code == 400 and "comment" in resp.text
        resp = await api.post(f"/api/v1/commands/{command_id}/approve",
                              json={"comment": "looks safe"}, headers=bearer(other))
        assert resp.status_code == 202, resp.text
        done = await reaches(api, requester, command_id, "succeeded")
        [step] = done["command"]["approvals"]
        assert (step["actor"], step["decision"], step["comment"]) == (
            "otto", "approved", "looks safe")
        again = await api.post(f"/api/v1/commands/{command_id}/approve",
                               json={"comment": "again"}, headers=bearer(other))
        assert again.status_code == 409

        second = (await send(api, requester, server)).json()["command"]["command"]["id"]
        resp = await api.post(f"/api/v1/commands/{second}/reject",
                              json={"comment": "not now"}, headers=bearer(other))
        assert resp.status_code == 200 and resp.json()["command"]["status"] == "rejected"

    async def approval_audited() -> list[dict[str, Any]]:
        resp = await api.get("/api/v1/audit", headers=bearer(other),
                             params={"action": "command.*", "target": f"command:{command_id}"})
        return [r["event"] for r in resp.json()["records"]
                if r["event"]["action"] == "command.approve"]

    [event] = await eventually(approval_audited)
    assert event["approvals"][0]["actor"] == "otto" and event["reason"] == "looks safe"


def verify(db: Path) -> subprocess.CompletedProcess[str]:
    env = {"FLEETDECK_SQL__URL": f"sqlite+aiosqlite:///{db}", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "fleetdeck", "audit", "verify"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


async def test_audit_verify_names_an_edited_record(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens, tmp_path: Path,
        stack: EmbeddedStack, sql: SQLStore) -> None:
    from schemas.audit import AuditEvent

    await sql.append_audit([AuditEvent(tenant="default", actor=f"t{i}", action="test.event",
                                       target=f"t:{i}") for i in range(5)])
    copy = tmp_path / "copy.db"
    source = sqlite3.connect(stack.endpoints.sql_url.split("///", 1)[1])
    with sqlite3.connect(copy) as dest:
        source.backup(dest)
    source.close()
    intact = verify(copy)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit log intact" in intact.stdout
    with sqlite3.connect(copy) as db:
        seq = db.execute("SELECT max(seq) - 2 FROM audit_log").fetchone()[0]
        db.execute("UPDATE audit_log SET body = replace(body, '\"test.event\"', "
                   "'\"test.other\"') WHERE seq = ?", (seq,))
    tampered = verify(copy)
    assert tampered.returncode == 1
    assert f"record {seq} " in tampered.stdout and "changed" in tampered.stdout
    shutil.rmtree(tmp_path, ignore_errors=True)
