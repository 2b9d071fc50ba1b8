"""The cron page in real Chromium, through the bus to an in-process agent whose cron handlers
work on a temporary cron directory (Europe/Berlin): the distribution's entry is listed
read-only; an impossible schedule is refused by the agent's dry run, next to the schedule
field; a valid one shows the exact line and the next fire times in the server's zone; the
entry is created with a reason, listed as FleetDeck's, and deleted with a reason."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from fleetdeck.stack import EmbeddedStack
from tests.conftest import FleetFactory
from tests.integration.test_commands import fleet_of
from tests.integration.test_cron import cron_agent, cron_settings, files

pytestmark = pytest.mark.e2e

LIVE_MS = 20_000


async def test_cron_page_checks_the_schedule_as_it_is_typed_and_manages_entries(
        stack: EmbeddedStack, page: Page, api: httpx.AsyncClient, fleet: FleetFactory,
        tmp_path: Path) -> None:
    [server] = await fleet_of(fleet, api, 1)
    settings = cron_settings(tmp_path / "agent")
    async with cron_agent(stack, {server: "default"}, tmp_path, settings):
        await page.goto(f"{stack.endpoints.ui_url}/servers/{server}/cron")

        # Every entry is listed; the one FleetDeck did not write is read-only.
        foreign = page.locator('#cron-rows tr[data-owned="false"]')
        await expect(foreign).to_have_count(1, timeout=LIVE_MS)
        await expect(foreign).to_contain_text("/usr/lib/e2scrub_all_cron")
        await expect(foreign).to_contain_text("read-only")
        await expect(foreign.locator("button")).to_have_count(0)
        await expect(foreign.locator(".fire-times li")).to_have_count(3)
        await expect(page.locator("#cron-summary")).to_contain_text("Europe/Berlin")

        # The template's typed parameters become fields.
        await page.locator("#cron-template").select_option("curl-healthcheck")
        await expect(page.locator("#cron-param-timeout_s")).to_have_value("10")
        await page.locator("#cron-param-url").fill("https://example.com/health")

        # A schedule that can never be valid: the agent's dry run names the field.
        schedule = page.locator("#cron-schedule")
        await schedule.fill("61 * * * *")
        preview = page.locator("#cron-preview")
        await expect(preview).to_have_attribute("data-state", "error", timeout=LIVE_MS)
        hint = page.locator("#cron-schedule-hint")
        await expect(hint).to_contain_text("schedule:")
        await expect(hint).to_have_attribute("data-state", "invalid")
        await expect(schedule).to_have_attribute("aria-invalid", "true")
        # A character no schedule may hold is caught in the page already.
        await schedule.fill("*/5 * * * ;")
        await expect(hint).to_contain_text("not allowed")

        # A valid one: the exact line and the next fire times in the server's timezone.
        await schedule.fill("30 2 * * *")
        await expect(preview).to_have_attribute("data-state", "ok", timeout=LIVE_MS)
        await expect(schedule).not_to_have_attribute("aria-invalid", "true")
        await expect(page.locator("#cron-preview-line")).to_contain_text(
            "30 2 * * * nobody /usr/bin/curl")
        await expect(page.locator("#cron-preview-line")).to_contain_text(
            "--url https://example.com/health")
        await expect(page.locator("#cron-preview-tz")).to_contain_text("Europe/Berlin")
        times = page.locator("#cron-preview-times li")
        await expect(times).to_have_count(5)
        for text in await times.all_text_contents():
            assert " 02:30 (UTC+0" in text, text
        assert files(settings.cron_dir).keys() == {"e2scrub_all"}  # dry runs write nothing

        # Creating needs a reason; then the entry is listed as FleetDeck's.
        await page.locator("#cron-comment").fill("health of the shop")
        await page.locator("#cron-submit").click()
        await expect(page.locator("#cron-message")).to_contain_text("reason")
        await expect(page.locator("#op-reason")).to_have_attribute("aria-invalid", "true")
        await page.locator("#op-reason").fill("OPS-1: watch the shop's health")
        await page.locator("#cron-submit").click()
        owned = page.locator('#cron-rows tr[data-owned="true"]')
        await expect(owned).to_have_count(1, timeout=LIVE_MS)
        await expect(owned).to_contain_text("curl-healthcheck")
        await expect(owned).to_contain_text("health of the shop")
        await expect(page.locator("#cron-message")).to_contain_text("Created")
        assert len(files(settings.cron_dir)) == 2

        # Deleting asks for a reason (the page's, changeable) and removes only that entry.
        await owned.locator(".cron-delete").click()
        dialog = page.locator("#cron-delete-dialog")
        await expect(dialog).to_be_visible()
        await expect(page.locator("#cron-delete-reason")).to_have_value(
            "OPS-1: watch the shop's health")
        await page.locator("#cron-delete-reason").fill("OPS-1: not needed any more")
        await page.locator("#cron-delete-confirm").click()
        await expect(dialog).to_be_hidden(timeout=LIVE_MS)
        await expect(owned).to_have_count(0, timeout=LIVE_MS)
        await expect(foreign).to_have_count(1)
        assert files(settings.cron_dir).keys() == {"e2scrub_all"}
        await page.screenshot(path="/tmp/fd-cron.png", full_page=True)
