"""Real Chromium (the Debian package), driven by Playwright; never downloaded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from fleetdeck.stack import EmbeddedStack
from tests.conftest import Admin

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium",
                                           args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


async def signed_in(browser: Browser, stack: EmbeddedStack, username: str,
                    password: str) -> BrowserContext:
    """A new browser context holding a session cookie of ``username``."""
    context = await browser.new_context()
    resp = await context.request.post(stack.endpoints.ui_url + "/api/v1/session",
                                      data={"username": username, "password": password})
    assert resp.ok, await resp.text()
    return context


@pytest.fixture
async def page(browser: Browser, stack: EmbeddedStack, admin: Admin) -> AsyncIterator[Page]:
    """A page of a browser signed in as the test admin."""
    context = await signed_in(browser, stack, admin.username, admin.password)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        await context.close()
    assert errors == [], f"JavaScript errors: {errors}"
