"""The Starlette application: pages, JSON API, SSE, health and metrics endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.schemas import SchemaGenerator
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from connectors import keystore
from connectors.errors import ConnectorError
from connectors.redis_live import LiveStreams
from connectors.sql import SQLError, SQLStore
from connectors.victoriametrics import VMClient
from ui import (
    alerts_api,
    api,
    audit_api,
    auth,
    commands_api,
    enroll_api,
    identity_api,
    ops_pages,
)
from ui.auth import Principal, authenticate
from ui.errors import APIError, http_error, upstream_error
from ui.settings import UISettings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
schemas = SchemaGenerator({"openapi": "3.0.3",
                           "info": {"title": "FleetDeck API", "version": "1"}})


async def _signed_in_or_login(request: Request) -> Principal | RedirectResponse:
    """The signed-in caller, or a redirect to the sign-in page that comes back here."""
    principal = await authenticate(request)
    if principal is not None:
        return principal
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': here})}", status_code=303)


async def index(request: Request) -> Response:
    principal = await _signed_in_or_login(request)
    if isinstance(principal, Response):
        return principal
    return templates.TemplateResponse(request, "index.html")


async def alerts_page(request: Request) -> Response:
    principal = await _signed_in_or_login(request)
    if isinstance(principal, Response):
        return principal
    return templates.TemplateResponse(request, "alerts.html", {"nav": "alerts"})


async def server_page(request: Request) -> Response:
    principal = await _signed_in_or_login(request)
    if isinstance(principal, Response):
        return principal
    server_id = api.server_id_param(request.path_params["id"])
    await api.own_server(request, principal, server_id)
    return templates.TemplateResponse(request, "server.html", {"server_id": server_id})


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site ("/..."), never another site.
    "//host", backslashes ("/\\host") and control characters (browsers drop a tab, so
    "/<tab>/host" would become "//host") all go to "/"."""
    if (not value or len(value) > 2000 or not value.startswith("/")
            or value.startswith("//") or "\\" in value
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)):
        return "/"
    return value


async def login_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {
        "nav": "login", "next": _safe_next(request.query_params.get("next"))})


async def _server_ops_page(request: Request, template: str,
                           extra: dict[str, Any] | None = None) -> Response:
    """A per-server page that works through the command bus (commands, cron, files): signed
    in, and the server in the caller's tenant (else 404, as the commands API says)."""
    principal = await _signed_in_or_login(request)
    if isinstance(principal, Response):
        return principal
    server_id = api.server_id_param(request.path_params["id"])
    if await commands_api.server_tenant(request, server_id) != principal.tenant:
        raise APIError(404, "not_found", f"no server {server_id!r} in tenant "
                       f"{principal.tenant!r}")
    raw = await request.app.state.live.summary(server_id)
    hostname = str(orjson.loads(raw).get("hostname") or "") if raw is not None else ""
    return templates.TemplateResponse(request, template, {
        "nav": "servers", "server_id": server_id, "hostname": hostname or server_id,
        **(extra or {})})


async def commands_page(request: Request) -> Response:
    return await _server_ops_page(request, "commands.html")


async def cron_page(request: Request) -> Response:
    return await _server_ops_page(request, "cron.html", {
        "cron_templates": ops_pages.cron_templates(),
        "limits": ops_pages.limits()})


async def files_page(request: Request) -> Response:
    return await _server_ops_page(request, "files.html", {"limits": ops_pages.limits()})


async def approvals_page(request: Request) -> Response:
    principal = await _signed_in_or_login(request)
    if isinstance(principal, Response):
        return principal
    return templates.TemplateResponse(request, "approvals.html", {"nav": "approvals"})


async def audit_page(request: Request) -> Response:
    principal = await _signed_in_or_login(request)
    if isinstance(principal, Response):
        return principal
    return templates.TemplateResponse(request, "audit.html", {"nav": "audit"})


async def healthz(request: Request) -> Response:
    """
    summary: Liveness and dependencies (Redis, VictoriaMetrics).
    responses:
      200: {description: all dependencies reachable}
      503: {description: a dependency is unreachable}
    """
    checks = {"redis": await request.app.state.live.ping(),
              "victoriametrics": await request.app.state.vm.healthy()}
    return JSONResponse({"status": "ok" if all(checks.values()) else "degraded",
                         "checks": checks}, status_code=200 if all(checks.values()) else 503)


async def metrics(request: Request) -> Response:
    """
    summary: Prometheus exposition of FleetDeck's own pipeline counters.
    responses:
      200: {description: text/plain; version=0.0.4}
    """
    try:
        counters = await request.app.state.live.counters()
    except ConnectorError:
        counters = {}
    lines = []
    for name, value in sorted(counters.items()):
        metric, _, reason = name.partition(":")
        label = f'{{reason="{reason}"}}' if reason else ""
        lines.append(f"fleetdeck_{metric}_total{label} {value}")
    lines.append(f"fleetdeck_ui_sse_clients {request.app.state.sse_clients}")
    lines.append(f"fleetdeck_ui_uptime_seconds {time.monotonic() - request.app.state.started:.0f}")
    return PlainTextResponse("\n".join(lines) + "\n",
                             media_type="text/plain; version=0.0.4")


async def openapi(request: Request) -> Response:
    return JSONResponse(schemas.get_schema(routes=request.app.routes))


def create_app(settings: UISettings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.live = LiveStreams(settings.redis)
        app.state.vm = VMClient(settings.vm)
        app.state.started = time.monotonic()
        app.state.sse_clients = 0
        app.state.sql = SQLStore(settings.sql)
        app.state.producer = None  # the event log (ui/bus.py), started on first use
        app.state.producer_lock = asyncio.Lock()
        app.state.signing = keystore.load_or_create(settings.keys_dir)
        app.state.login_failures = identity_api.Failures()
        app.state.credentials = auth.Credentials()
        app.state.file_rules = set()
        if settings.alert_rules_file is not None:  # a bad file stops the start, clearly
            app.state.file_rules = {r.id for r in alerts_api.read_rules_file(
                settings.alert_rules_file)}
        try:  # the dashboard still starts when the SQL store is down; alert routes say 503
            await app.state.sql.migrate()
            if settings.alert_rules_file is not None:
                await alerts_api.load_rules_file(settings.alert_rules_file, app.state.sql,
                                                 app.state.live)
        except SQLError as exc:
            log.error("the SQL store is unavailable; alerts will answer 503: %s", exc)
        try:
            yield
        finally:
            await app.state.live.close()
            await app.state.vm.close()
            await app.state.sql.close()
            if app.state.producer is not None:
                await app.state.producer.stop()

    routes = [
        Route("/", index, include_in_schema=False),
        Route("/servers/{id}", server_page, include_in_schema=False),
        Route("/servers/{id}/commands", commands_page, include_in_schema=False),
        Route("/servers/{id}/cron", cron_page, include_in_schema=False),
        Route("/servers/{id}/files", files_page, include_in_schema=False),
        Route("/login", login_page, include_in_schema=False),
        Route("/approvals", approvals_page, include_in_schema=False),
        Route("/audit", audit_page, include_in_schema=False),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/v1/servers", api.list_servers),
        Route("/api/v1/servers/{id}", api.get_server),
        Route("/api/v1/servers/{id}/series", api.get_series),
        Route("/api/v1/channels", api.list_channels),
        Route("/api/v1/stream", api.stream),
        Route("/alerts", alerts_page, include_in_schema=False),
        Route("/api/v1/servers/{id}/alert-events", alerts_api.server_alert_events),
        Route("/api/v1/alerts", alerts_api.list_alerts),
        Route("/api/v1/alerts/stream", alerts_api.alerts_stream),
        Route("/api/v1/alerts/silences", alerts_api.list_silences, methods=["GET"]),
        Route("/api/v1/alerts/silences", alerts_api.create_silence, methods=["POST"]),
        Route("/api/v1/alerts/silences/{id}", alerts_api.expire_silence, methods=["DELETE"]),
        Route("/api/v1/alerts/rules", alerts_api.list_rules, methods=["GET"]),
        Route("/api/v1/alerts/rules", alerts_api.create_rule, methods=["POST"]),
        Route("/api/v1/alerts/rules/{id}", alerts_api.get_rule, methods=["GET"]),
        Route("/api/v1/alerts/rules/{id}", alerts_api.put_rule, methods=["PUT"]),
        Route("/api/v1/alerts/rules/{id}", alerts_api.delete_rule, methods=["DELETE"]),
        Route("/api/v1/alerts/{id}", alerts_api.get_alert),
        Route("/api/v1/alerts/{id}/ack", alerts_api.ack, methods=["POST"]),
        Route("/api/v1/alerts/{id}/unack", alerts_api.unack, methods=["POST"]),
        Route("/api/v1/commands", commands_api.create_command, methods=["POST"]),
        Route("/api/v1/commands", commands_api.list_commands, methods=["GET"]),
        Route("/api/v1/commands/stream", commands_api.commands_stream),
        Route("/api/v1/commands/{id}", commands_api.get_command),
        Route("/api/v1/commands/{id}/approve", commands_api.approve, methods=["POST"]),
        Route("/api/v1/commands/{id}/reject", commands_api.reject, methods=["POST"]),
        Route("/api/v1/audit", audit_api.list_audit),
        Route("/api/v1/session", identity_api.sign_in, methods=["POST"]),
        Route("/api/v1/session", identity_api.sign_out, methods=["DELETE"]),
        Route("/api/v1/me", identity_api.me),
        Route("/api/v1/tokens", identity_api.create_token, methods=["POST"]),
        Route("/api/v1/tokens", identity_api.list_tokens, methods=["GET"]),
        Route("/api/v1/tokens/{id}", identity_api.revoke_token, methods=["DELETE"]),
        Route("/api/v1/policies", identity_api.list_policies),
        Route("/api/v1/policies/{type}", identity_api.set_policy, methods=["PUT"]),
        Route("/api/v1/enrollment-tokens", enroll_api.create_enrollment_token,
              methods=["POST"]),
        Route("/api/v1/agents/enroll", enroll_api.enroll, methods=["POST"]),
        Route("/api/v1/agents", enroll_api.list_agents),
        Route("/api/v1/openapi.json", openapi, include_in_schema=False),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error,
                                         ConnectorError: upstream_error})
