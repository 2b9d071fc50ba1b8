"""The command pages in real Chromium: two users of one tenant sign in through /login; PING
needs an approval there; the first sends one from the server's commands page, cannot approve
it himself, the second approves it in /approvals, it runs on an in-process agent and the first
sees it succeed live; the audit page shows its creation and approval."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from connectors.sql import SQLStore
from fleetdeck.stack import EmbeddedStack
from schemas.identity import Role
from tests.conftest import FleetFactory, Tokens, bearer, eventually, sim_servers
from tests.integration.test_commands import command_agents
from ui.auth import hash_password

pytestmark = pytest.mark.e2e

SHOTS = Path("/tmp")


async def make_user(sql: SQLStore, tenant: str, name: str, role: Role) -> str:
    password = secrets.token_urlsafe(12)
    await sql.create_user(name, hash_password(password))
    await sql.set_membership(name, tenant, str(role))
    return password


async def sign_in(page: Page, username: str, password: str, tenant: str = "") -> None:
    """Fill the sign-in form (the page must be on /login) and submit it."""
    await page.locator("#login-username").fill(username)
    await page.locator("#login-password").fill(password)
    await page.locator("#login-tenant").fill(tenant)
    await page.locator("#login-submit").click()


async def new_page(browser: Browser, errors: list[str]) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, page


async def test_ping_is_approved_by_another_user_runs_and_is_audited(
        stack: EmbeddedStack, browser: Browser, fleet: FleetFactory, sql: SQLStore,
        token: Tokens, tmp_path: Path) -> None:
    ui = stack.endpoints.ui_url
    tenant = f"e2e-{uuid.uuid4().hex[:6]}"
    viewer = await token(tenant, Role.VIEWER, "e2e-viewer")  # also creates the tenant
    rita, otto = f"rita-{tenant}", f"otto-{tenant}"
    rita_pw = await make_user(sql, tenant, rita, Role.APPROVER)
    otto_pw = await make_user(sql, tenant, otto, Role.APPROVER)
    await sql.set_policy(tenant, "PING", True)

    sim = sim_servers(1)[0]
    sim.tenant = tenant
    await fleet([sim])
    async with httpx.AsyncClient(base_url=ui, timeout=10, headers=bearer(viewer)) as api:
        async def listed() -> bool:
            resp = await api.get("/api/v1/servers")
            return sim.server_id in {s["server_id"] for s in resp.json()["servers"]}

        await eventually(listed)

    errors: list[str] = []
    rita_ctx, rita_page = await new_page(browser, errors)
    otto_ctx, otto_page = await new_page(browser, errors)
    commands_url = f"{ui}/servers/{sim.server_id}/commands"
    async with command_agents(stack, {sim.server_id: tenant}, tmp_path):
        # Not signed in: the page sends us to /login and back; a wrong password is explained.
        await rita_page.goto(commands_url)
        assert rita_page.url.startswith(f"{ui}/login?next=")
        await rita_page.screenshot(path=str(SHOTS / "fd-login.png"))
        await sign_in(rita_page, rita, "not-the-password")
        await expect(rita_page.locator("#login-message")).to_contain_text(
            "wrong user name or password")
        await sign_in(rita_page, rita, rita_pw, tenant)
        await rita_page.wait_for_url(commands_url)
        await expect(rita_page.locator("#me-name")).to_have_text(rita)
        await expect(rita_page.locator("#me-tenant")).to_have_text(tenant)
        await expect(rita_page.locator("#me-role")).to_have_text("approver")

        # The reason is checked as it is typed.
        submit = rita_page.locator("#ping-submit")
        await expect(submit).to_be_disabled()
        await rita_page.locator("#ping-reason").fill("ab")
        await expect(rita_page.locator("#ping-reason")).to_have_attribute("aria-invalid", "true")
        await expect(rita_page.locator("#ping-reason-hint")).to_contain_text("1 more")
        await expect(submit).to_be_disabled()
        await rita_page.locator("#ping-payload").fill("hello <b>e2e</b>")
        await rita_page.locator("#ping-reason").fill("checking the agent from the e2e test")
        await expect(submit).to_be_enabled()
        await submit.click()
        pending = rita_page.locator('#command-rows tr[data-status="pending-approval"]')
        await expect(pending).to_have_count(1)
        command_id = await pending.get_attribute("data-command-id")
        assert command_id
        await expect(rita_page.locator("#ping-message")).to_contain_text("waits for an approver")
        row = rita_page.locator(f'#command-rows tr[data-command-id="{command_id}"]')
        await expect(row.locator(".cmd-actor")).to_have_text(rita)

        # The requester cannot approve their own command: the API's refusal is shown.
        approvals = await rita_ctx.new_page()
        approvals.on("pageerror", lambda exc: errors.append(str(exc)))
        await approvals.goto(f"{ui}/approvals")
        own = approvals.locator(f'#approval-rows tr[data-command-id="{command_id}"]')
        await expect(own.locator(".marker-you")).to_be_visible()
        await own.locator(".approve-button").click()
        await approvals.locator("#decide-comment").fill("approving my own")
        await approvals.locator("#decide-submit").click()
        await expect(approvals.locator("#decide-message")).to_contain_text(
            "cannot approve or reject their own command")
        await expect(approvals.locator("#error-banner")).to_be_visible()
        await approvals.locator("#decide-cancel").click()
        await approvals.close()

        # The other approver signs in (tenant left out: he has only one) and approves it.
        await otto_page.goto(f"{ui}/login?next=/approvals")
        await sign_in(otto_page, otto, otto_pw)
        await otto_page.wait_for_url(f"{ui}/approvals")
        mine = otto_page.locator(f'#approval-rows tr[data-command-id="{command_id}"]')
        await expect(mine).to_have_attribute("data-status", "pending-approval")
        await expect(mine.locator(".cmd-reason")).to_have_text(
            "checking the agent from the e2e test")
        await expect(mine.locator(".marker-you")).to_be_hidden()
        await otto_page.screenshot(path=str(SHOTS / "fd-approvals.png"))
        await mine.locator(".approve-button").click()
        await otto_page.locator("#decide-submit").click()  # no comment: refused in the page
        await expect(otto_page.locator("#decide-message")).to_contain_text("comment")
        await otto_page.locator("#decide-comment").fill("looks safe")
        await otto_page.locator("#decide-submit").click()
        await expect(otto_page.locator("#decide-dialog")).to_be_hidden()
        await expect(mine).to_have_attribute("data-status", "succeeded", timeout=20_000)
        await expect(mine.locator(".approve-button")).to_be_hidden()

        # The requester's page follows live, to succeeded.
        await expect(row).to_have_attribute("data-status", "succeeded", timeout=20_000)
        await row.locator(".cmd-open").click()
        dialog = rita_page.locator("#command-dialog")
        await expect(dialog).to_be_visible()
        await expect(dialog.locator("#cd-history li")).to_have_count(5)
        statuses = await dialog.locator("#cd-history li").evaluate_all(
            "items => items.map(li => li.dataset.status)")
        assert statuses == ["pending-approval", "queued", "acked", "running", "succeeded"]
        trace = dialog.locator("#cd-approvals li")
        await expect(trace).to_have_count(1)
        await expect(trace.locator(".history-transition")).to_have_text(f"approved by {otto}")
        await expect(trace.locator(".history-reason")).to_have_text("looks safe")
        await expect(dialog.locator("#cd-result")).to_contain_text("hello <b>e2e</b>")
        await rita_page.screenshot(path=str(SHOTS / "fd-command-detail.png"))
        await dialog.locator("#cd-close").click()
        await rita_page.screenshot(path=str(SHOTS / "fd-commands.png"))

    # The server's page links to its commands.
    await rita_page.goto(f"{ui}/servers/{sim.server_id}")
    await expect(rita_page.locator("#me-name")).to_have_text(rita)
    await rita_page.screenshot(path=str(SHOTS / "fd-server.png"))
    await rita_page.locator("#server-commands").click()
    await rita_page.wait_for_url(commands_url)
    await expect(rita_page.locator(f'#command-rows tr[data-command-id="{command_id}"]')
                 ).to_have_attribute("data-status", "succeeded")

    # The audit page, filtered to this command: created by rita, approved by otto.
    await otto_page.goto(f"{ui}/audit")
    await otto_page.locator("#f-action").fill("command.*")
    await otto_page.locator("#f-target").fill(f"command:{command_id}")

    async def audited() -> list[str]:
        await otto_page.locator("#f-apply").click()
        await otto_page.wait_for_selector('#page[data-state="ready"]')
        actions = await otto_page.locator("#audit-rows tr").evaluate_all(
            "rows => rows.map(r => r.dataset.action)")
        wanted = {"command.create", "command.approve", "command.finished"}
        return actions if wanted <= set(actions) else []

    actions = await eventually(audited, timeout=20, interval=0.5)
    assert actions == ["command.finished", "command.approve", "command.create"]
    assert "action=command.*" in otto_page.url.replace("%2A", "*")
    approve = otto_page.locator('#audit-rows tr[data-action="command.approve"]')
    await expect(approve.locator(".a-actor")).to_have_text(otto)
    await expect(approve.locator(".approval-list li")).to_have_text(
        f"approved by {otto}: looks safe")
    await expect(approve.locator(".a-reason")).to_have_text("looks safe")
    await approve.locator("summary").click()
    await expect(approve.locator(".a-before")).to_contain_text("pending-approval")
    create = otto_page.locator('#audit-rows tr[data-action="command.create"]')
    await expect(create.locator(".a-actor")).to_have_text(rita)
    await otto_page.screenshot(path=str(SHOTS / "fd-audit.png"), full_page=True)

    # Signing out ends the session; a page then asks to sign in again. A `next` that leaves
    # the site is ignored.
    await otto_page.locator("#sign-out").click()
    await otto_page.wait_for_url(f"{ui}/login")
    await otto_page.goto(f"{ui}/approvals")
    assert otto_page.url.startswith(f"{ui}/login?next=%2Fapprovals")
    for bad in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        await otto_page.goto(f"{ui}/login?{httpx.QueryParams(next=bad)}")
        assert await otto_page.locator("#login-form").get_attribute("data-next") == "/"

    for context in (rita_ctx, otto_ctx):
        await context.close()
    assert errors == [], f"JavaScript errors: {errors}"
