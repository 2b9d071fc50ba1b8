"""JSON API and the SSE stream."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from connectors.redis_live import STREAM_ID, LiveStreamError, LiveStreams, StreamEntry
from connectors.victoriametrics import VMClient
from schemas import CHANNELS, ID_PATTERN, HealthState
from schemas.identity import Role
from ui import series as series_logic
from ui.auth import Principal, require
from ui.errors import APIError, bad_parameter

log = logging.getLogger(__name__)

_SERVER_ID = re.compile(ID_PATTERN)


class ORJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _live(request: Request) -> LiveStreams:
    return request.app.state.live  # type: ignore[no-any-return]


def _vm(request: Request) -> VMClient:
    return request.app.state.vm  # type: ignore[no-any-return]


def server_id_param(value: str, name: str = "id") -> str:
    if not _SERVER_ID.fullmatch(value):
        raise bad_parameter(name, "letters, digits and . _ : - only, at most 128 characters")
    return value


def tenant_of(data: dict[str, Any]) -> str:
    """The tenant a live summary, sample or event belongs to."""
    return str(data.get("tenant") or "default")


def own_summary(raw: str | bytes | None, principal: Principal, server_id: str) -> Any:
    """The server's live summary if it belongs to the caller's tenant; 404 otherwise (another
    tenant's server looks exactly like one that does not exist)."""
    summary = None if raw is None else orjson.loads(raw)
    if summary is None or tenant_of(summary) != principal.tenant:
        raise APIError(404, "not_found", f"no server {server_id!r} in tenant "
                       f"{principal.tenant!r}")
    return summary


async def own_server(request: Request, principal: Principal, server_id: str) -> Any:
    """:func:`own_summary` of ``server_id``, read from Redis."""
    return own_summary(await _live(request).summary(server_id), principal, server_id)


def of_tenant(tenant: str) -> Callable[[StreamEntry], bool]:
    """An SSE filter keeping the entries of ``tenant``."""
    def keep(entry: StreamEntry) -> bool:
        try:
            data = orjson.loads(entry.data)
        except orjson.JSONDecodeError:
            return False
        return isinstance(data, dict) and tenant_of(data) == tenant

    return keep


async def list_servers(request: Request) -> Response:
    """
    summary: Servers with their health, last seen time and latest CPU and memory figures.
    parameters:
      - name: health
        in: query
        schema: {type: string, enum: [OK, WARNING, CRITICAL, STALE, OFFLINE]}
      - {name: q, in: query, description: part of hostname or id, schema: {type: string}}
    responses:
      200: {description: "{servers: [...]}"}
      400: {description: bad parameter}
      401: {description: not signed in}
    """
    principal = await require(request, Role.VIEWER)
    health = request.query_params.get("health")
    if health is not None and health not in HealthState.__members__:
        raise bad_parameter("health", f"must be one of {', '.join(HealthState.__members__)}")
    needle = request.query_params.get("q", "").lower()
    if len(needle) > 256:
        raise bad_parameter("q", "at most 256 characters")
    servers = [orjson.loads(raw) for raw in (await _live(request).summaries()).values()]
    servers = [s for s in servers
               if tenant_of(s) == principal.tenant
               and (health is None or s.get("health") == health)
               and (needle in s.get("hostname", "").lower() or needle in s["server_id"].lower())]
    servers.sort(key=lambda s: (s.get("hostname", ""), s["server_id"]))
    return ORJSONResponse({"servers": servers})


async def get_server(request: Request) -> Response:
    """
    summary: One server's summary and its latest full sample.
    responses:
      200: {description: "{server: {...}, sample: {...}}"}
      404: {description: "unknown server, or another tenant's"}
    """
    principal = await require(request, Role.VIEWER)
    server_id = server_id_param(request.path_params["id"])
    summary = await own_server(request, principal, server_id)
    return ORJSONResponse({"server": summary,
                           "sample": await _latest_sample(_live(request), server_id)})


async def _latest_sample(live: LiveStreams, server_id: str) -> Any:
    for entry in await live.tail(live.keys.server_stream(server_id), 20):
        if entry.event == "sample":
            return orjson.loads(entry.data)
    return None


async def get_series(request: Request) -> Response:
    """
    summary: Time series of one server from VictoriaMetrics, one column set per series.
    parameters:
      - {name: channels, in: query, description: comma-separated, schema: {type: string}}
      - {name: range, in: query, description: "15m, 1h, 6h, 24h, 1m..31d", schema: {type: string}}
      - {name: step, in: query, description: seconds between points, schema: {type: integer}}
      - {name: end, in: query, description: Unix time of the range end, schema: {type: number}}
    responses:
      200:
        description: "{server_id, range, step_s, start, end, series: [{channel, labels,
          unit, timestamps, values}]}"
      400: {description: "bad parameter, naming it"}
      404: {description: "unknown server, or another tenant's"}
    """
    principal = await require(request, Role.VIEWER)
    server_id = server_id_param(request.path_params["id"])
    params = request.query_params
    range_text = params.get("range", "1h")
    range_s = series_logic.parse_range(range_text)
    query = series_logic.SeriesQuery(
        server_id=server_id, tenant=principal.tenant,
        channels=series_logic.parse_channels(params.get("channels")),
        range_s=range_s, step_s=series_logic.parse_step(params.get("step"), range_s),
        end=series_logic.parse_end(params.get("end"), time.time()))
    # The query selects the caller's tenant only, so what it finds is theirs: one round trip.
    # Finding nothing, the live summary tells a quiet server of theirs from one that is not.
    result = series_logic.reshape(query, await _vm(request).query_range_raw(
        series_logic.build_query(query), query.start, query.end, query.step_s))
    if not result["series"]:
        await own_server(request, principal, server_id)
    result["range"] = range_text
    return ORJSONResponse(result)


async def list_channels(request: Request) -> Response:
    """
    summary: Every channel with its unit and description.
    responses:
      200: {description: "{channels: [{name, unit, description, label}]}"}
    """
    await require(request, Role.VIEWER)
    return ORJSONResponse({"channels": [
        {"name": c.name, "unit": c.unit, "description": c.description, "label": c.label}
        for c in CHANNELS.values()]})


async def stream(request: Request) -> Response:
    """
    summary: Server-Sent Events of samples and health changes (fleet, or one server).
    description: >
      Events `sample` and `health`; each event id is the Redis stream id, so a client
      reconnecting with Last-Event-ID (header or `last_event_id` query parameter) resumes
      without gaps or duplicates.
    parameters:
      - {name: server, in: query, description: only this server, schema: {type: string}}
      - {name: Last-Event-ID, in: header, schema: {type: string}}
    responses:
      200: {description: text/event-stream}
      400: {description: bad parameter}
      404: {description: "unknown server, or another tenant's"}
    """
    principal = await require(request, Role.VIEWER)
    live = _live(request)
    server = request.query_params.get("server")
    if server is not None:
        await own_server(request, principal, server_id_param(server, "server"))
        return await sse_response(request, live.keys.server_stream(server))
    return await sse_response(request, live.keys.fleet_stream, of_tenant(principal.tenant))


async def sse_response(request: Request, key: str,
                       keep: Callable[[StreamEntry], bool] | None = None) -> Response:
    """SSE of the Redis stream ``key``, resuming after Last-Event-ID (header or the
    ``last_event_id`` query parameter); with ``keep``, only the entries it accepts."""
    live = _live(request)
    resume = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if resume is not None and not STREAM_ID.fullmatch(resume):
        raise bad_parameter("Last-Event-ID", f"{resume[:64]!r} is not an event id of this stream")
    if resume is not None and _id_key(resume) > _id_key(await live.last_id(key)):
        raise bad_parameter("Last-Event-ID", f"{resume!r} is newer than the stream's last event")
    state = request.app.state
    if state.sse_clients >= state.settings.sse_max_clients:
        raise APIError(503, "too_many_streams",
                       f"{state.sse_clients} live streams are open; try again later")
    after = resume or await live.last_id(key)
    ping = state.settings.sse_ping_s
    return EventSourceResponse(_counted(state, _events(live, key, after, keep)), ping=ping,
                               headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def _counted(state: Any, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    state.sse_clients += 1
    try:
        async for chunk in events:
            yield chunk
    finally:
        state.sse_clients -= 1


async def _events(live: LiveStreams, key: str, after: str,
                  keep: Callable[[StreamEntry], bool] | None = None) -> AsyncIterator[bytes]:
    """Every entry after ``after`` (that ``keep`` accepts); the entries of one read go out in
    one write."""
    while True:
        try:
            entries = await live.read(key, after, block_ms=5_000)
        except LiveStreamError as exc:  # Redis away: keep the client, retry from the same id
            log.warning("live stream read failed, retrying: %s", exc)
            await asyncio.sleep(1.0)
            continue
        if entries:
            after = entries[-1].id
            chunk = b"".join(ServerSentEvent(data=e.data, event=e.event, id=e.id).encode()
                             for e in entries if keep is None or keep(e))
            if chunk:
                yield chunk
