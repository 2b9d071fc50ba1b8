"""Agent enrollment through the real stack: enrollment tokens (API and CLI), the one-time
enrollment, the pinned key, the server registry and its tenancy, and the errors."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.enroll import apply_enrollment
from agent.settings import AgentSettings
from connectors.keystore import load_or_create
from connectors.sql import SQLSettings, SQLStore
from fleetdeck.stack import EmbeddedStack
from schemas.envelope import utcnow
from schemas.identity import Role
from tests.conftest import bearer, eventually
from ui.auth import new_token
from ui.enroll_api import BAD_TOKEN
from ui.enrollment import new_enrollment

pytestmark = pytest.mark.integration

Tokens = Callable[[str, Role, str], Awaitable[str]]
ENROLL = "/api/v1/agents/enroll"


@pytest.fixture
async def sql(stack: EmbeddedStack) -> AsyncIterator[SQLStore]:
    store = SQLStore(SQLSettings(url=stack.endpoints.sql_url))
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
def token(sql: SQLStore) -> Tokens:
    async def make(tenant: str, role: Role, name: str) -> str:
        text, record = new_token(tenant, role, name, "test", timedelta(hours=1))
        await sql.create_tenant(tenant, tenant)
        await sql.create_token(record)
        return text

    return make


def new_id(prefix: str = "enr") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def body(text: str, server_id: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"token": text, "hostname": "web-1.example.com",
                           "agent_version": "0.1.0", "os": "Debian GNU/Linux 12; Linux 6.1",
                           "capabilities": ["PING"], **extra}
    if server_id is not None:
        out["server_id"] = server_id
    return out


async def enrollment_token(api: httpx.AsyncClient, auth: str | None = None,
                           **fields: Any) -> str:
    headers = {} if auth is None else bearer(auth)
    resp = await api.post("/api/v1/enrollment-tokens", json=fields, headers=headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


async def agents(api: httpx.AsyncClient, auth: str) -> dict[str, dict[str, Any]]:
    resp = await api.get("/api/v1/agents", headers=bearer(auth))
    assert resp.status_code == 200, resp.text
    return {a["server_id"]: a for a in resp.json()["agents"]}


async def audited(api: httpx.AsyncClient, auth: str, **params: str) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]]:
        resp = await api.get("/api/v1/audit", headers=bearer(auth), params=params)
        assert resp.status_code == 200, resp.text
        return [r["event"] for r in resp.json()["records"]]

    return list(await eventually(found))


async def test_an_agent_enrolls_once_and_pins_the_control_key(
        api: httpx.AsyncClient, anon: httpx.AsyncClient, stack: EmbeddedStack,
        token: Tokens) -> None:
    text = await enrollment_token(api, note="rack 4")
    assert text.startswith("fde_")
    server = new_id()
    resp = await anon.post(ENROLL, json=body(text, server))
    assert resp.status_code == 200, resp.text
    key = load_or_create(Path(stack.endpoints.keys_dir))
    assert resp.json() == {"server_id": server, "tenant": "default",
                           "control_key_pem": key.public_pem(), "key_id": key.key_id}

    again = await anon.post(ENROLL, json=body(text, new_id()))
    assert again.status_code == 401 and again.json()["error"]["message"] == BAD_TOKEN

    viewer = await token("default", Role.VIEWER, "vic")
    listed = (await agents(api, viewer))[server]
    assert (listed["hostname"], listed["agent_version"], listed["os"], listed["capabilities"]) \
        == ("web-1.example.com", "0.1.0", "Debian GNU/Linux 12; Linux 6.1", ["PING"])
    assert listed["enrolled_at"]

    auditor = await token("default", Role.APPROVER, "audrey")
    [enrolled] = await audited(api, auditor, action="agent.enroll", target=f"server:{server}")
    assert enrolled["actor"] == f"agent:{server}" and enrolled["outcome"] == "ok"
    assert enrolled["after"]["capabilities"] == ["PING"]
    token_id = text.split("_")[1]
    [created] = await audited(api, auditor, action="enrollment.create",
                              target=f"enrollment:{token_id}")
    assert created["reason"] == "rack 4" and text not in json.dumps(created)


async def test_the_server_id_defaults_to_the_host_name(api: httpx.AsyncClient,
                                                       anon: httpx.AsyncClient) -> None:
    host = new_id("host")
    resp = await anon.post(ENROLL, json=body(await enrollment_token(api),
                                             hostname=f"{host}.example.com"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["server_id"] == host


async def test_expired_wrong_and_garbage_tokens_all_get_the_same_401(
        api: httpx.AsyncClient, anon: httpx.AsyncClient, sql: SQLStore, token: Tokens) -> None:
    expired_text, record = new_enrollment("default", "test", timedelta(minutes=1))
    past = utcnow() - timedelta(minutes=5)
    await sql.create_enrollment(dataclasses.replace(record, created_at=past,
                                                    expires_at=past + timedelta(minutes=1)))
    valid = await enrollment_token(api)
    wrong_secret = valid.rsplit("_", 1)[0] + "_not-the-secret"
    tried = []
    for text in (expired_text, wrong_secret, "fde_nope_nope", "garbage", "fdt_abc_def"):
        server = new_id()
        tried.append(server)
        resp = await anon.post(ENROLL, json=body(text, server))
        assert resp.status_code == 401, (text, resp.text)
        assert resp.json()["error"] == {"code": "unauthenticated", "message": BAD_TOKEN}
    listed = await agents(api, await token("default", Role.VIEWER, "vic"))
    assert not set(tried) & set(listed)
    assert (await anon.post(ENROLL, json=body(valid, new_id()))).status_code == 200


async def test_tenants_see_only_their_own_agents_and_cannot_take_them_over(
        api: httpx.AsyncClient, anon: httpx.AsyncClient, token: Tokens) -> None:
    tenant_b = new_id("tenant-b")
    admin_b = await token(tenant_b, Role.ADMIN, "bea")
    ours, theirs = new_id("ours"), new_id("theirs")
    assert (await anon.post(ENROLL, json=body(await enrollment_token(api), ours))
            ).status_code == 200
    resp = await anon.post(ENROLL, json=body(await enrollment_token(api, admin_b), theirs))
    assert resp.status_code == 200 and resp.json()["tenant"] == tenant_b

    seen_by_b = await agents(api, await token(tenant_b, Role.VIEWER, "bob"))
    seen_by_a = await agents(api, await token("default", Role.VIEWER, "vic"))
    assert set(seen_by_b) == {theirs}
    assert ours in seen_by_a and theirs not in seen_by_a

    b_token = await enrollment_token(api, admin_b)
    taken = await anon.post(ENROLL, json=body(b_token, ours))
    assert taken.status_code == 409, taken.text
    assert "another tenant" in taken.json()["error"]["message"]
    assert tenant_b not in taken.text and "default" not in taken.json()["error"]["message"]
    assert (await agents(api, await token("default", Role.VIEWER, "vic")))[ours]
    # the refused attempt did not spend the token
    assert (await anon.post(ENROLL, json=body(b_token, new_id()))).status_code == 200


async def test_re_enrolling_in_the_same_tenant_updates_the_registry(
        api: httpx.AsyncClient, anon: httpx.AsyncClient, token: Tokens) -> None:
    server = new_id()
    await anon.post(ENROLL, json=body(await enrollment_token(api), server))
    resp = await anon.post(ENROLL, json=body(await enrollment_token(api), server,
                                             agent_version="0.2.0",
                                             capabilities=["PING", "FILE_READ"]))
    assert resp.status_code == 200, resp.text
    listed = (await agents(api, await token("default", Role.VIEWER, "vic")))[server]
    assert listed["agent_version"] == "0.2.0"
    assert listed["capabilities"] == ["FILE_READ", "PING"]


async def test_only_admins_make_enrollment_tokens(api: httpx.AsyncClient,
                                                  anon: httpx.AsyncClient,
                                                  token: Tokens) -> None:
    operator = await token("default", Role.OPERATOR, "olivia")
    url = "/api/v1/enrollment-tokens"
    cases = [
        (await anon.post(url, json={}), 401, "sign in"),
        (await api.post(url, json={}, headers=bearer(operator)), 403, "needs the admin role"),
        (await api.post(url, json={"ttl_s": 10}), 400, "'ttl_s'"),
        (await api.post(url, json={"ttl_s": 8 * 86400}), 400, "'ttl_s'"),
        (await api.post(url, json={"tenant": "other"}), 400, "'tenant'"),
        (await api.post(url, content=b"{}", headers={"content-type": "text/plain"}), 415,
         "application/json"),
    ]
    for resp, status, words in cases:
        assert resp.status_code == status, resp.text
        assert words in resp.json()["error"]["message"], resp.text
    assert (await anon.get("/api/v1/agents")).status_code == 401


async def test_bad_enrollment_bodies_get_400_naming_the_field(
        api: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    text = await enrollment_token(api)
    good = body(text, new_id())
    cases = [
        ({**good, "surprise": 1}, "'surprise'"),
        ({**good, "server_id": "has spaces"}, "'server_id'"),
        ({**good, "hostname": "x" * 300}, "'hostname'"),
        ({k: v for k, v in good.items() if k != "os"}, "'os'"),
        ({**good, "capabilities": ["PING", "bad cap"]}, "'capabilities.1'"),
        ({**good, "agent_version": ""}, "'agent_version'"),
    ]
    for data, words in cases:
        resp = await anon.post(ENROLL, json=data)
        assert resp.status_code == 400, resp.text
        assert words in resp.json()["error"]["message"], resp.text
    assert (await anon.post(ENROLL, json=[good])).status_code == 400
    cross = await anon.post(ENROLL, json=good, headers={"origin": "https://evil.example"})
    assert cross.status_code == 403
    # none of that spent the token
    assert (await anon.post(ENROLL, json=good)).status_code == 200


def fleetdeck(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run([sys.executable, "-m", "fleetdeck", *args], env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)


async def test_the_clis_enroll_an_agent_that_then_runs_as_that_server(
        api: httpx.AsyncClient, stack: EmbeddedStack, token: Tokens, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    made = fleetdeck("enroll", "create", "--tenant", "default", "--ttl", "10m",
                     env={"FLEETDECK_SQL__URL": stack.endpoints.sql_url})
    assert made.returncode == 0, made.stderr
    text = made.stdout.strip().splitlines()[-1]
    assert text.startswith("fde_") and "shown once" in made.stderr

    state, server = tmp_path / "agent-state", new_id()
    args = ("agent", "enroll", "--url", stack.endpoints.ui_url, "--state-dir", str(state),
            "--server-id", server)
    done = fleetdeck(*args, env={"FLEETDECK_ENROLL_TOKEN": text})
    assert done.returncode == 0, done.stderr
    assert f"enrolled as server {server} in tenant default" in done.stdout
    key = load_or_create(Path(stack.endpoints.keys_dir))
    assert (state / "control.pub").read_text() == key.public_pem()
    assert stat.S_IMODE((state / "control.pub").stat().st_mode) == 0o644
    assert stat.S_IMODE((state / "enrollment.json").stat().st_mode) == 0o600
    assert json.loads((state / "enrollment.json").read_text()) == {
        "server_id": server, "tenant": "default", "url": stack.endpoints.ui_url,
        "key_id": key.key_id}

    again = fleetdeck(*args, "--token", "fde_any_thing", env={})
    assert again.returncode == 1 and "--force" in again.stderr
    spent = fleetdeck(*args, "--token", text, "--force", env={})
    assert spent.returncode == 1 and "(401)" in spent.stderr and text not in spent.stderr

    listed = (await agents(api, await token("default", Role.VIEWER, "vic")))[server]
    assert "PING" in listed["capabilities"] and listed["os"] != "unknown"
    for name in ("FLEETDECK_AGENT_SERVER_ID", "FLEETDECK_AGENT_TENANT",
                 "FLEETDECK_AGENT_CONTROL_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = apply_enrollment(AgentSettings(state_dir=state))
    assert (settings.server_id, settings.tenant) == (server, "default")
    assert settings.control_key_file() == state / "control.pub"
