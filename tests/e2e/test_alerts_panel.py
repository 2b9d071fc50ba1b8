"""The alert panel in real Chromium: a server crosses a threshold, the alert appears live,
it is acknowledged with a comment on one page and shows as acknowledged on a second page,
then the server recovers and the alert resolves."""

from __future__ import annotations

import time

import httpx
import pytest
from playwright.async_api import Browser, Page

from fleetdeck.stack import EmbeddedStack
from tests.conftest import Admin, FleetFactory, bearer, sim_servers
from tests.e2e.conftest import signed_in
from tests.integration.test_alerts import create_rule, rule_id

pytestmark = pytest.mark.e2e


async def open_panel(browser: Browser, stack: EmbeddedStack, admin: Admin,
                     errors: list[str]) -> Page:
    context = await signed_in(browser, stack, admin.username, admin.password)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(stack.endpoints.ui_url + "/alerts")
    return page


async def test_alert_is_acknowledged_on_one_page_and_seen_on_another(
        stack: EmbeddedStack, fleet: FleetFactory, browser: Browser, admin: Admin) -> None:
    sim = sim_servers(1)[0]
    rule = rule_id("e2e")
    async with httpx.AsyncClient(base_url=stack.endpoints.ui_url, timeout=10,
                                 headers=bearer(admin.token)) as api:
        await create_rule(api, id=rule, name="E2E CPU", expr="cpu.total > 95 for 1s",
                          clear=50, severity="critical",
                          match=[{"label": "server_id", "value": sim.server_id}])
    errors: list[str] = []
    first = await open_panel(browser, stack, admin, errors)
    second = await open_panel(browser, stack, admin, errors)
    for page in (first, second):
        await page.locator("#filter-server").fill(sim.server_id)
    await fleet([sim])
    sim.force("critical", 600)

    row = f'#alerts-table tbody tr[data-server-id="{sim.server_id}"][data-state="firing"]'
    await first.wait_for_selector(row, timeout=60_000)
    await second.wait_for_selector(row, timeout=20_000)
    alert_row = first.locator(row).filter(has_text="E2E CPU")
    alert_id = await alert_row.get_attribute("data-alert-id")
    assert alert_id

    await alert_row.locator(".ack-button").click()
    dialog = first.locator("#ack-dialog")
    await dialog.wait_for(state="visible")
    await first.locator("#ack-submit").click()  # no comment: refused in the page
    assert await dialog.is_visible()
    assert "comment" in (await first.locator("#ack-message").inner_text()).lower()
    await first.locator("#ack-comment").fill("investigating the CPU spike")
    await first.locator("#ack-submit").click()
    clicked = time.monotonic()

    acked = f'tr[data-alert-id="{alert_id}"][data-state="acknowledged"]'
    await first.wait_for_selector(acked, timeout=10_000)
    seen_first = time.monotonic()
    await second.wait_for_selector(acked, timeout=10_000)
    seen_second = time.monotonic()
    assert seen_second - seen_first < 1.0, (clicked, seen_first, seen_second)
    assert await second.locator(f"{acked} .acked-by").inner_text() == admin.username
    assert await second.locator(f"{acked} .alert-state").inner_text() == "acknowledged"

    sim.force("ok", 600)
    await second.locator("#filter-state").select_option("all")
    await second.wait_for_selector(f'tr[data-alert-id="{alert_id}"][data-state="resolved"]',
                                   timeout=30_000)
    await first.wait_for_selector(f'tr[data-alert-id="{alert_id}"][data-state="resolved"]',
                                  timeout=10_000)

    await second.locator(f'tr[data-alert-id="{alert_id}"] .history-button').click()
    history = second.locator("#alert-history li[data-transition]")
    await history.nth(3).wait_for(timeout=10_000)
    transitions = [await history.nth(i).get_attribute("data-transition")
                   for i in range(await history.count())]
    assert transitions == ["pending", "firing", "acknowledged", "resolved"]
    for page in (first, second):
        await page.context.close()
    assert errors == [], f"JavaScript errors: {errors}"
