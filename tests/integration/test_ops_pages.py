"""The per-server pages that work through the command bus (commands, cron, files): a signed-in
user of the server's tenant gets the page, with the links between them; another tenant and
an unknown server get 404; an anonymous caller is sent to sign in."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from schemas.cron import TEMPLATE_PARAMS
from schemas.identity import Role
from tests.conftest import FleetFactory, Tokens, bearer
from tests.integration.test_commands import fleet_of

pytestmark = pytest.mark.integration

PAGES = ["commands", "cron", "files"]


def page_json(html: str, element_id: str) -> object:
    found = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>',
                      html, re.S)
    assert found, f"no #{element_id} in the page"
    return json.loads(found[1])


async def test_ops_pages_answer_their_tenant_only(
        api: httpx.AsyncClient, anon: httpx.AsyncClient, fleet: FleetFactory,
        token: Tokens) -> None:
    [server] = await fleet_of(fleet, api, 1)
    beta = bearer(await token("beta", Role.ADMIN, "bea"))
    viewer = bearer(await token("default", Role.VIEWER, "vic"))
    for name in PAGES:
        path = f"/servers/{server}/{name}"
        for headers in (None, viewer):  # the admin's token, and a viewer's
            resp = await api.get(path, headers=headers)
            assert resp.status_code == 200, (path, resp.text)
            assert resp.headers["content-type"].startswith("text/html")
            assert f'data-server-id="{server}"' in resp.text
            for other in set(PAGES) - {name}:
                assert f'href="/servers/{server}/{other}"' in resp.text, (path, other)
        theirs = await api.get(path, headers=beta)
        assert theirs.status_code == 404, (path, theirs.text)
        unknown = await api.get(f"/servers/no-such-server-{name}/{name}")
        assert unknown.status_code == 404
        redirected = await anon.get(path)
        assert redirected.status_code == 303
        assert redirected.headers["location"].startswith("/login?next=")

    server_page = await api.get(f"/servers/{server}")
    for name in PAGES:
        assert f'href="/servers/{server}/{name}"' in server_page.text

    cron = await api.get(f"/servers/{server}/cron")
    templates = page_json(cron.text, "cron-templates")
    assert isinstance(templates, list)
    assert [t["name"] for t in templates] == list(TEMPLATE_PARAMS)
    health = next(t for t in templates if t["name"] == "curl-healthcheck")
    assert health["schema"]["required"] == ["url"]
    assert health["schema"]["properties"]["timeout_s"]["maximum"] == 300
    limits = page_json(cron.text, "page-limits")
    assert isinstance(limits, dict) and limits["max_result"] > 0 and limits["max_body"] > 0
