"""The file browser in real Chromium, through the bus to an in-process agent whose file
handlers work on a temporary sandbox root: list and browse, view with highlighting, edit and
save, a save refused because the file changed meanwhile, an upload in several chunks with a
progress bar, move, delete to the trash and restore, permanent deletion behind a typed
confirmation, and a symlink escape refused with the agent's reason. Nothing outside the
root changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from playwright.async_api import FilePayload, Page, expect

from agent.settings import AgentSettings
from fleetdeck.stack import EmbeddedStack
from tests.conftest import FleetFactory
from tests.integration.test_commands import fleet_of
from tests.integration.test_cron import cron_agent as ops_agent  # any handlers' context

pytestmark = pytest.mark.e2e

LIVE_MS = 20_000
CONF = "[main]\nport = 8080\nname = shop\n"


def sandbox(tmp: Path) -> tuple[Path, Path]:
    """A root with a few files and folders, and a secret next to it (outside)."""
    root = tmp / "srv"
    (root / "docs").mkdir(parents=True)
    (root / "app.ini").write_text(CONF)
    (root / "notes.txt").write_text("remember the milk\n")
    (root / "docs" / "readme.md").write_text("# Docs\n")
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for you\n")
    (root / "escape").symlink_to(outside / "secret.txt")
    return root, outside


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.is_symlink()}


async def test_file_browser_through_the_bus(
        stack: EmbeddedStack, page: Page, api: httpx.AsyncClient, fleet: FleetFactory,
        tmp_path: Path) -> None:
    [server] = await fleet_of(fleet, api, 1)
    root, outside = sandbox(tmp_path / "tree")
    before_outside = snapshot(outside)
    settings = AgentSettings.model_validate({"file_roots": [root]})
    async with ops_agent(stack, {server: "default"}, tmp_path, settings):
        await page.goto(f"{stack.endpoints.ui_url}/servers/{server}/files")
        rows = page.locator("#files-rows tr")
        await expect(page.locator('#files-rows tr[data-name="app.ini"]')).to_be_visible(
            timeout=LIVE_MS)
        await expect(page.locator("#files-root")).to_be_hidden()  # a single root
        await expect(page.locator('#files-rows tr[data-name="docs"]')).to_contain_text("dir")
        await expect(page.locator('#files-rows tr[data-name="app.ini"] td.mono').first
                     ).to_have_text("0644")

        # Into a folder and back by the breadcrumb.
        await page.locator('#files-rows tr[data-name="docs"] .file-name').click()
        await expect(page.locator('#files-rows tr[data-name="readme.md"]')).to_be_visible(
            timeout=LIVE_MS)
        assert "path=docs" in page.url
        await page.locator("#files-crumbs .crumb").first.click()
        await expect(page.locator('#files-rows tr[data-name="app.ini"]')).to_be_visible(
            timeout=LIVE_MS)

        # View with highlighting; edit and save with the page's reason.
        await page.locator('#files-rows tr[data-name="app.ini"] .file-name').click()
        code = page.locator("#file-code")
        await expect(code).to_contain_text("port = 8080", timeout=LIVE_MS)
        await expect(code.locator("[class^='hljs-']").first).to_be_visible()
        await page.locator("#op-reason").fill("OPS-2: move the shop to port 9090")
        await page.locator("#file-edit").click()
        await page.locator("#file-editor").fill(CONF.replace("8080", "9090"))
        await page.locator("#file-save").click()
        await expect(page.locator("#file-message")).to_contain_text("Saved", timeout=LIVE_MS)
        assert (root / "app.ini").read_text() == CONF.replace("8080", "9090")

        # Someone else changes the file after it was loaded: the save is refused, clearly.
        await page.locator("#file-edit").click()
        (root / "app.ini").write_text("changed by someone else\n")
        await page.locator("#file-editor").fill("my late change\n")
        await page.locator("#file-save").click()
        await expect(page.locator("#file-message")).to_contain_text(
            "changed on the server", timeout=LIVE_MS)
        assert (root / "app.ini").read_text() == "changed by someone else\n"
        await page.locator("#file-discard").click()
        await page.locator("#file-close").click()

        # An upload bigger than one chunk, with its progress; the bytes arrive unchanged.
        data = bytes(range(256)) * 1200  # 300 KiB, several chunks
        await page.locator("#upload-input").set_input_files(
            FilePayload(name="blob.bin", mimeType="application/octet-stream", buffer=data))
        await page.locator("#upload-submit").click()
        await expect(page.locator("#upload-status")).to_contain_text("uploaded",
                                                                     timeout=60_000)
        assert hashlib.sha256((root / "blob.bin").read_bytes()).digest() == \
            hashlib.sha256(data).digest()
        await expect(page.locator('#files-rows tr[data-name="blob.bin"]')).to_be_visible(
            timeout=LIVE_MS)

        # Move (rename).
        await page.locator('#files-rows tr[data-name="notes.txt"] .file-move').click()
        await page.locator("#move-to").fill("docs/notes-moved.txt")
        await page.locator("#move-confirm").click()
        await expect(page.locator("#move-dialog")).to_be_hidden(timeout=LIVE_MS)
        await expect(page.locator('#files-rows tr[data-name="notes.txt"]')).to_have_count(
            0, timeout=LIVE_MS)
        assert (root / "docs" / "notes-moved.txt").read_text() == "remember the milk\n"

        # Delete to the trash, see it there, restore it.
        await page.locator('#files-rows tr[data-name="blob.bin"] .file-delete').click()
        await expect(page.locator("#delete-confirm")).to_have_text("Move to trash")
        await page.locator("#delete-confirm").click()
        await expect(page.locator("#delete-dialog")).to_be_hidden(timeout=LIVE_MS)
        assert not (root / "blob.bin").exists()
        await page.locator("#files-trash-toggle").click()
        trashed = page.locator("#trash-rows tr", has_text="blob.bin")
        await expect(trashed).to_have_count(1, timeout=LIVE_MS)
        await trashed.locator(".file-restore").click()
        await expect(page.locator("#files-message")).to_contain_text("Restored",
                                                                     timeout=LIVE_MS)
        assert hashlib.sha256((root / "blob.bin").read_bytes()).digest() == \
            hashlib.sha256(data).digest()
        await page.locator("#files-trash-toggle").click()

        # Permanent deletion needs the name typed.
        await page.locator('#files-rows tr[data-name="blob.bin"] .file-delete').click()
        await page.locator("#delete-permanent").check()
        await expect(page.locator("#delete-confirm")).to_be_disabled()
        await page.locator("#delete-confirm-name").fill("blob.bin")
        await expect(page.locator("#delete-confirm")).to_have_text("Delete permanently")
        await page.locator("#delete-confirm").click()
        await expect(page.locator("#delete-dialog")).to_be_hidden(timeout=LIVE_MS)
        assert not (root / "blob.bin").exists()
        await expect(page.locator('#files-rows tr[data-name="blob.bin"]')).to_have_count(
            0, timeout=LIVE_MS)

        # A symlink out of the root: the agent refuses it and the page says why.
        await page.locator('#files-rows tr[data-name="escape"] .file-name').click()
        await expect(page.locator("#file-message")).to_contain_text("refused",
                                                                    timeout=LIVE_MS)
        await expect(page.locator("#file-code")).not_to_contain_text("not for you")
        await expect(rows).not_to_have_count(0)
        await page.screenshot(path="/tmp/fd-files.png", full_page=True)
    assert snapshot(outside) == before_outside
