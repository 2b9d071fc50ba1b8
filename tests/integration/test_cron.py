"""The cron manager through the real stack: API → signed command → an in-process agent whose
handlers are bound to a temporary cron directory → reports → the API. Hostile schedules are
refused by the API (400) or by the agent (failed, with the reason); free-form commands need
the tenant's approval policy."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.commands import CommandListener, EventSender
from agent.executor import Executor, ReplayGuard
from agent.ops import OpsContext
from agent.settings import AgentSettings
from connectors.kafka import KafkaSettings
from connectors.keystore import load_or_create
from connectors.sql import SQLStore
from fleetdeck.stack import EmbeddedStack
from schemas.identity import Role
from tests.conftest import FleetFactory, Tokens, bearer
from tests.integration.test_commands import fleet_of, reaches

pytestmark = pytest.mark.integration

FOREIGN = "# the distribution's\n30 3 * * 0 root /usr/lib/e2scrub_all_cron\n"


def cron_settings(root: Path, **changes: Any) -> AgentSettings:
    """An agent's settings with every cron path inside ``root``."""
    (root / "cron.d").mkdir(parents=True)
    (root / "srv").mkdir()
    (root / "cron.d" / "e2scrub_all").write_text(FOREIGN)
    return AgentSettings(cron_dir=root / "cron.d", cron_tabs=[], cron_spool_dir=None,
                         cron_timezone="Europe/Berlin", cron_path_roots=[root / "srv"],
                         **changes)


@contextlib.asynccontextmanager
async def cron_agent(stack: EmbeddedStack, servers: dict[str, str], state: Path,
                     settings: AgentSettings) -> AsyncIterator[Executor]:
    """The command side of agents for ``servers``, handlers bound to ``settings``."""
    key = load_or_create(Path(stack.endpoints.keys_dir))
    kafka = KafkaSettings(bootstrap_servers=stack.endpoints.kafka)
    sender = EventSender(kafka)
    executor = Executor({key.key_id: key.public}, ReplayGuard(state / "seen.log"), sender,
                        context=OpsContext(settings))
    listener = CommandListener(kafka, servers, executor,
                               group_id=f"test-cron-{uuid.uuid4().hex[:8]}")
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


async def cron(api: httpx.AsyncClient, auth: str, server: str, kind: str,
               **params: Any) -> httpx.Response:
    body = {"server_id": server, "type": kind, "params": params,
            "reason": "managing cron entries"}
    return await api.post("/api/v1/commands", json=body, headers=bearer(auth))


async def finished(api: httpx.AsyncClient, auth: str, resp: httpx.Response,
                   status: str = "succeeded") -> dict[str, Any]:
    assert resp.status_code == 202, resp.text
    return await reaches(api, auth, resp.json()["command"]["command"]["id"], status)


HEALTH = {"url": "https://example.com/health?check=1%2C2"}


def files(directory: Path) -> dict[str, str]:
    """The cron directory's files (dot files too: FleetDeck leaves none) and their text."""
    return {p.name: p.read_text() for p in sorted(directory.iterdir())}


async def test_entries_are_created_listed_updated_and_deleted_through_the_bus(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens, tmp_path: Path,
        stack: EmbeddedStack) -> None:
    [server] = await fleet_of(fleet, api, 1)
    operator = await token("default", Role.OPERATOR, "olivia")
    settings = cron_settings(tmp_path / "agent")
    cron_dir = settings.cron_dir
    async with cron_agent(stack, {server: "default"}, tmp_path, settings):
        dry = await finished(api, operator, await cron(
            api, operator, server, "CRON_CREATE", schedule="30 2 * * *",
            template="curl-healthcheck", params=HEALTH, dry_run=True, preview=2,
            preview_from="2025-03-29T12:00:00Z"))
        assert dry["result"]["next"] == ["2025-03-30T03:00:00+02:00",
                                         "2025-03-31T02:30:00+02:00"]
        assert dry["result"]["line"].endswith(
            "--url 'https://example.com/health?check=1\\%2C2'")
        assert files(cron_dir) == {"e2scrub_all": FOREIGN}

        made = (await finished(api, operator, await cron(
            api, operator, server, "CRON_CREATE", schedule="30 2 * * *",
            template="curl-healthcheck", params=HEALTH)))["result"]
        path = Path(made["path"])
        assert path.parent == cron_dir
        assert files(cron_dir)[path.name].endswith(made["line"] + "\n")
        assert made["line"] == dry["result"]["line"]

        listed = (await finished(api, operator, await cron(
            api, operator, server, "CRON_LIST", preview=1)))["result"]["entries"]
        assert [(Path(e["source"]).name, e["owned"]) for e in listed] == [
            ("e2scrub_all", False), (path.name, True)]

        changed = (await finished(api, operator, await cron(
            api, operator, server, "CRON_UPDATE", entry_id=made["entry_id"],
            schedule="@hourly", template="curl-healthcheck", params=HEALTH)))["result"]
        assert changed["before"] == made["line"] and changed["line"].startswith("@hourly ")

        gone = (await finished(api, operator, await cron(
            api, operator, server, "CRON_DELETE", entry_id=made["entry_id"])))["result"]
        assert gone["removed"]
    assert files(cron_dir) == {"e2scrub_all": FOREIGN}  # byte for byte


REFUSED_BY_THE_API = [
    ("* * * * * ; rm -rf /", "character ';' is not allowed"),
    ("* * * * *\n* * * * * root evil", "control character"),
    ("$(id) * * * *", "character '$'"),
    ("\uff10 * * * *", "U+FF10"),
]
REFUSED_BY_THE_AGENT = [
    ("0 0 30 2 *", "never fires: February has no day 30"),
    ("*/0 * * * *", "minute: step value of zero"),
    ("0 24 * * *", "hour: 24 is out of range 0-23"),
    ("0 0 1 1 * 2030", "expected 5 fields"),
]


REFUSED_TYPES = [  # no coercion of JSON values, no instant off the calendar
    ("CRON_CREATE", {"schedule": "@daily", "template": "curl-healthcheck",
                     "params": {**HEALTH, "retries": True}}, "retries"),
    ("CRON_CREATE", {"schedule": "@daily", "template": "curl-healthcheck",
                     "params": {**HEALTH, "timeout_s": "60"}}, "timeout_s"),
    ("CRON_LIST", {"owned_only": "yes"}, "owned_only"),
    ("CRON_LIST", {"preview_from": "9999-12-31T23:59:00+00:00"}, "preview_from"),
    ("CRON_LIST", {"preview_from": "0001-01-01T00:00:00+00:00"}, "preview_from"),
]


async def test_hostile_input_is_refused_with_its_reason_and_changes_nothing(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens, tmp_path: Path,
        stack: EmbeddedStack) -> None:
    [server] = await fleet_of(fleet, api, 1)
    operator = await token("default", Role.OPERATOR, "olivia")
    settings = cron_settings(tmp_path / "agent")
    for schedule, words in REFUSED_BY_THE_API:
        resp = await cron(api, operator, server, "CRON_CREATE", schedule=schedule,
                          template="curl-healthcheck", params=HEALTH)
        assert resp.status_code == 400 and words in resp.json()["error"]["message"], resp.text
        assert "schedule" in resp.json()["error"]["message"]
    resp = await cron(api, operator, server, "CRON_CREATE", schedule="@daily",
                      template="script", params={"name": "x", "args": ["a\nb"]})
    assert resp.status_code == 400 and "must be printable" in resp.text, resp.text
    for kind, params, words in REFUSED_TYPES:
        resp = await cron(api, operator, server, kind, **params)
        assert resp.status_code == 400 and words in resp.json()["error"]["message"], resp.text
    async with cron_agent(stack, {server: "default"}, tmp_path, settings):
        cases = [*REFUSED_BY_THE_AGENT,
                 ("@daily", "free-form cron commands are disabled for tenant 'default'")]
        for schedule, words in cases:
            template = "freeform" if words.startswith("free-form") else "curl-healthcheck"
            params = {"command": "id"} if template == "freeform" else HEALTH
            failed = await finished(api, operator, await cron(
                api, operator, server, "CRON_CREATE", schedule=schedule, template=template,
                params=params), status="failed")
            assert words in failed["message"], failed
    assert files(settings.cron_dir) == {"e2scrub_all": FOREIGN}


async def test_free_form_commands_need_the_tenants_approval_policy(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens, sql: SQLStore,
        tmp_path: Path, stack: EmbeddedStack) -> None:
    requester = await token("cronops", Role.APPROVER, "rita")
    approver = await token("cronops", Role.APPROVER, "otto")
    [server] = await fleet_of(fleet, api, 1, tenant="cronops", as_token=requester)
    settings = cron_settings(tmp_path / "agent", cron_freeform_tenants=["cronops"])
    command = {"schedule": "@daily", "template": "freeform",
               "params": {"command": "date +%F >> /tmp/dates"}}
    async with cron_agent(stack, {server: "cronops"}, tmp_path, settings):
        unapproved = await finished(api, requester, await cron(
            api, requester, server, "CRON_CREATE", **command), status="failed")
        assert "without approval" in unapproved["message"]
        await sql.set_policy("cronops", "CRON_CREATE", True)
        resp = await cron(api, requester, server, "CRON_CREATE", **command)
        assert resp.json()["command"]["status"] == "pending-approval", resp.text
        command_id = resp.json()["command"]["command"]["id"]
        approve = await api.post(f"/api/v1/commands/{command_id}/approve",
                                 json={"comment": "dates are harmless"},
                                 headers=bearer(approver))
        assert approve.status_code == 202, approve.text
        done = await reaches(api, requester, command_id, "succeeded")
    assert done["result"]["line"] == "@daily nobody date +\\%F >> /tmp/dates"
    assert Path(done["result"]["path"]).name in files(settings.cron_dir)
