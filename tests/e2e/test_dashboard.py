"""The dashboard in real Chromium: a badge turns CRITICAL live; a chart grows without reload."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from fleetdeck.stack import EmbeddedStack
from tests.conftest import FleetFactory, eventually, sim_servers

pytestmark = pytest.mark.e2e

async def test_badge_turns_critical_live_and_chart_grows(
        stack: EmbeddedStack, fleet: FleetFactory, page: Page) -> None:
    sims = sim_servers(2)
    await fleet(sims)
    target = sims[0]
    await page.goto(stack.endpoints.ui_url + "/")
    row = page.locator(f'tr[data-server-id="{target.server_id}"]')
    await row.wait_for(timeout=60_000)
    badge = row.locator(".badge")
    assert await badge.get_attribute("data-health") in {"OK", "WARNING"}
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    target.force("critical", 120)
    await page.wait_for_selector(
        f'tr[data-server-id="{target.server_id}"] .badge[data-health="CRITICAL"]',
        timeout=20_000)
    assert await badge.inner_text() == "CRITICAL"
    assert navigations == []  # it changed live, without a reload

    await row.locator("td.host a").click()
    await page.wait_for_url(f"**/servers/{target.server_id}")
    chart = page.locator("#chart-cpu")
    await page.wait_for_selector("#chart-cpu[data-points]", timeout=20_000)

    async def points() -> int:
        return int(await chart.get_attribute("data-points") or 0)

    start = await eventually(points, timeout=20)
    navigations.clear()
    await eventually(lambda: _grew(points, start + 3), timeout=20)
    assert navigations == []
    assert await page.locator("#server-health").get_attribute("data-health") == "CRITICAL"


async def _grew(points, at_least: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(await points() >= at_least)
