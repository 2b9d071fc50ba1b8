"""The file manager through the real stack: API → signed command → an in-process agent whose
handlers are bound to a temporary sandbox root → reports → the API. Hostile paths show as
failed commands with their reason, and nothing outside the sandbox changes."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.settings import AgentSettings
from fleetdeck.stack import EmbeddedStack
from schemas.identity import Role
from tests.conftest import FleetFactory, Tokens, bearer, eventually
from tests.integration.test_commands import fleet_of
from tests.integration.test_cron import cron_agent, finished
from tests.unit.test_files import snapshot

pytestmark = pytest.mark.integration


def sandbox(base: Path) -> tuple[AgentSettings, Path, Path]:
    """A root with a little tree, an outside directory beside it, and links out of it."""
    root, outside = base / "root", base / "outside"
    (root / "www").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("outside\n")
    (root / "www" / "index.html").write_text("<h1>hi</h1>\n")
    (root / "escape").symlink_to("../outside")
    (root / "www" / "shadow").symlink_to("/etc/shadow")
    os.link(outside / "secret.txt", root / "hardlink")
    settings = AgentSettings(file_roots=[root], state_dir=base / "state")
    return settings, root, outside


async def send(api: httpx.AsyncClient, auth: str, server: str, kind: str,
               **params: Any) -> httpx.Response:
    body = {"server_id": server, "type": kind, "params": params,
            "reason": "managing files"}
    return await api.post("/api/v1/commands", json=body, headers=bearer(auth))


async def test_files_are_managed_through_the_bus(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens, tmp_path: Path,
        stack: EmbeddedStack) -> None:
    [server] = await fleet_of(fleet, api, 1)
    operator = await token("default", Role.OPERATOR, "olivia")
    admin = await token("default", Role.ADMIN, "ada")
    settings, root, outside = sandbox(tmp_path / "agent")
    before = snapshot(outside)

    async def audited(command_id: str) -> dict[str, Any]:
        """The audit event of the command's end."""
        async def check() -> dict[str, Any] | None:
            resp = await api.get("/api/v1/audit", headers=bearer(admin),
                                 params={"target": f"command:{command_id}"})
            assert resp.status_code == 200, resp.text
            return next((r["event"] for r in resp.json()["records"]
                         if r["event"]["action"] == "command.finished"), None)

        return dict(await eventually(check, timeout=20))

    async def ok(kind: str, **params: Any) -> dict[str, Any]:
        done = await finished(api, operator, await send(api, operator, server, kind, **params))
        ids.append(done["command"]["id"])
        return done["result"]  # type: ignore[no-any-return]

    ids: list[str] = []

    async with cron_agent(stack, {server: "default"}, tmp_path, settings):
        listed = await ok("FILE_LIST", path="www")
        assert listed["root"] == str(root) and listed["total"] == 2
        assert listed["roots"] == [{"index": 0, "path": str(root)}]
        assert [(e["name"], e["type"]) for e in listed["entries"]] == [
            ("index.html", "file"), ("shadow", "symlink")]

        old = hashlib.sha256(b"<h1>hi</h1>\n").hexdigest()
        written = await ok("FILE_WRITE", path="www/index.html", content="<h1>new</h1>\n",
                           expected_sha256=old)
        assert written["before"] == {"size": 12, "sha256": old} and not written["created"]
        read = await ok("FILE_READ", path="www/index.html")
        assert read["content"] == "<h1>new</h1>\n" and read["sha256"] == written["sha256"]

        data = bytes(range(256)) * 300
        sha = hashlib.sha256(data).hexdigest()
        pieces = [data[i:i + 30000] for i in range(0, len(data), 30000)]
        offset = 0
        for n, piece in enumerate(pieces):
            final = n == len(pieces) - 1
            extra = {"final": True, "sha256": sha, "total_size": len(data)} if final else {}
            got = await ok("FILE_UPLOAD_CHUNK", path="www/blob.bin", upload_id="up-123456",
                           offset=offset, data=base64.b64encode(piece).decode(), **extra)
            offset = got["received"]
        assert got["complete"] and got["sha256"] == sha
        assert (root / "www/blob.bin").read_bytes() == data

        moved = await ok("FILE_MOVE", path="www/blob.bin", destination="blob.bin")
        assert moved == {"path": "www/blob.bin", "destination": "blob.bin", "trash_id": None,
                         "replaced": None,
                         "before": {"destination": "blob.bin", "exists": False}}
        gone = await ok("FILE_DELETE", path="blob.bin")
        assert not (root / "blob.bin").exists()
        assert gone["before"]["sha256"] == sha and gone["before"]["size"] == len(data)
        audit = await audited(ids[-1])
        assert audit["before"] == gone["before"] and audit["after"]["trash_id"] == gone[
            "trash_id"]
        trash = await ok("FILE_LIST", trash=True)
        assert [e["original_path"] for e in trash["entries"]] == ["blob.bin"]
        back = await ok("FILE_RESTORE", trash_id=gone["trash_id"])
        assert back["path"] == "blob.bin" and (root / "blob.bin").read_bytes() == data

        over = await ok("FILE_MOVE", path="www/index.html", destination="blob.bin",
                        overwrite=True)
        assert over["replaced"] == {"path": "blob.bin", "type": "file", "size": len(data),
                                    "sha256": sha, "trash_id": over["trash_id"]}
        audit = await audited(ids[-1])
        assert audit["before"]["sha256"] == sha and audit["after"]["trash_id"] == over[
            "trash_id"]
        await ok("FILE_RESTORE", trash_id=over["trash_id"], path="www/blob.bin")
        assert (root / "www/blob.bin").read_bytes() == data
    assert snapshot(outside) == before


HOSTILE = [
    ("FILE_READ", {"path": "../outside/secret.txt"}, "refused (parent-segment)"),
    ("FILE_READ", {"path": "escape/secret.txt"}, "refused (symlink-escape)"),
    ("FILE_READ", {"path": "www/shadow"}, "refused (symlink-escape)"),
    ("FILE_WRITE", {"path": "escape/secret.txt", "content": "pwned"},
     "refused (symlink-escape)"),
    ("FILE_WRITE", {"path": "%2e%2e/outside/x", "content": "pwned"},
     "refused (percent-encoding)"),
    ("FILE_READ", {"path": "www\\..\\..\\outside"}, "refused (backslash)"),
    ("FILE_READ", {"path": "\uff0e\uff0e/outside/secret.txt"}, "refused (not-normalised)"),
    ("FILE_READ", {"path": "/etc/passwd"}, "refused (outside-root)"),
    ("FILE_MOVE", {"path": "www/index.html", "destination": "escape/index.html"},
     "refused (symlink-escape)"),
    ("FILE_LIST", {"path": ".fleetdeck-trash"}, "refused (reserved)"),
    ("FILE_READ", {"path": "hardlink"}, "refused (hard-link)"),
    ("FILE_READ", {"path": "www/index.html/"}, "refused (not-a-directory)"),
]


async def test_hostile_paths_fail_with_their_reason_and_change_nothing(
        api: httpx.AsyncClient, fleet: FleetFactory, token: Tokens, tmp_path: Path,
        stack: EmbeddedStack) -> None:
    [server] = await fleet_of(fleet, api, 1)
    operator = await token("default", Role.OPERATOR, "olivia")
    settings, root, outside = sandbox(tmp_path / "agent")
    before, inside = snapshot(outside), snapshot(root)
    async with cron_agent(stack, {server: "default"}, tmp_path, settings):
        for kind, params, words in HOSTILE:
            failed = await finished(api, operator, await send(api, operator, server, kind,
                                                               **params), status="failed")
            assert failed["message"].startswith(words), (kind, params, failed["message"])
    assert snapshot(outside) == before and snapshot(root) == inside
