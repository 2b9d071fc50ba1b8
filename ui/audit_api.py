"""Audit API: the tenant's audit records, newest first, with filters and paging by ``seq``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from schemas.identity import Role
from ui.api import ORJSONResponse
from ui.auth import require
from ui.errors import bad_parameter


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_parameter(name, "not an ISO 8601 time like 2026-01-31T12:00:00Z") from None
    if parsed.tzinfo is None:
        raise bad_parameter(name, "give a time zone (Z for UTC)")
    return parsed


def _text(name: str, value: str | None, limit: int = 256) -> str | None:
    if value is not None and (not value or len(value) > limit):
        raise bad_parameter(name, f"1 to {limit} characters")
    return value


async def list_audit(request: Request) -> Response:
    """
    summary: Audit records of your tenant, newest first (approver or admin).
    parameters:
      - {name: actor, in: query, schema: {type: string}}
      - {name: action, in: query, description: "exact, or a prefix ending in . or * (command.*)",
         schema: {type: string}}
      - {name: target, in: query, description: "e.g. command:<id>", schema: {type: string}}
      - {name: since, in: query, schema: {type: string, format: date-time}}
      - {name: until, in: query, schema: {type: string, format: date-time}}
      - {name: before_seq, in: query, description: "next page: the last seq you got",
         schema: {type: integer}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000}}
    responses:
      200: {description: "{records: [{seq, hash, event}], next_before_seq}"}
      400: {description: bad parameter}
      403: {description: role too low}
    """
    principal = await require(request, Role.APPROVER)
    q = request.query_params
    try:
        limit = int(q.get("limit", "100"))
        before_seq = int(q["before_seq"]) if "before_seq" in q else None
    except ValueError:
        raise bad_parameter("limit/before_seq", "must be whole numbers") from None
    if not 1 <= limit <= 1000:
        raise bad_parameter("limit", "must be between 1 and 1000")
    entries = await request.app.state.sql.list_audit(
        principal.tenant, actor=_text("actor", q.get("actor")),
        action=_text("action", q.get("action"), 64), target=_text("target", q.get("target")),
        since=_time("since", q.get("since")), until=_time("until", q.get("until")),
        before_seq=before_seq, limit=limit)
    records: list[dict[str, Any]] = [
        {"seq": e.seq, "hash": e.hash, "event": e.event.model_dump(mode="json")}
        for e in entries]
    return ORJSONResponse({"records": records,
                           "next_before_seq": records[-1]["seq"] if len(records) == limit
                           else None})
