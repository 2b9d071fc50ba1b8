"""Alerts API: alerts and their history, acknowledgements, silences, rules, live stream.

Alert state is owned by the stream worker (a Faust table); an acknowledgement is sent to
it on ``fd.alert-actions`` and shows up on the alert stream once applied. Rules and
silences live in the SQL store; each change raises the version key in Redis, which the
worker watches to reload them without a restart.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import Response

from connectors.redis_live import LiveStreamError, LiveStreams
from connectors.sql import SQLStore
from schemas import AlertAction, AlertEvent, AlertRule, AlertState, Matcher, Silence, new_id
from schemas.alerts import Duration, Severity
from schemas.audit import AuditEvent
from schemas.envelope import AuditText
from schemas.identity import Role
from schemas.topics import ALERT_ACTIONS
from ui import bus
from ui import series as series_logic
from ui.api import ORJSONResponse, of_tenant, own_server, server_id_param, sse_response
from ui.auth import Principal, require
from ui.errors import APIError, bad_parameter

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_SILENCE = timedelta(days=90)


# request bodies ------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AckBody(_Body):
    comment: AuditText = Field(min_length=1, max_length=1000, description="Why (required)")
    expires_s: Duration | None = Field(None, description="Re-notify if still firing after this "
                                       "(at least 60 s; omit for no expiry)")

    @field_validator("expires_s")
    @classmethod
    def _long_enough(cls, value: float | None) -> float | None:
        if value is not None and value < 60:
            raise ValueError("at least 60 seconds (omit it for an acknowledgement that "
                             "does not expire)")
        return value


class UnackBody(_Body):
    comment: AuditText = Field(min_length=1, max_length=1000)


class SilenceBody(_Body):
    matchers: list[Matcher] = Field(min_length=1, max_length=32)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    duration_s: Duration | None = Field(None, description="Instead of ends_at")
    comment: AuditText = Field(min_length=1, max_length=1000)


def field_problem(exc: ValidationError) -> tuple[str, str]:
    """(field, message) of the first error; model-level checks say "field: why"."""
    first = exc.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    where = ".".join(str(p) for p in first["loc"])
    if not where:
        named = _NAMED.match(message)
        where, message = (named[1], named[2]) if named else ("body", message)
    return where, message


_NAMED = re.compile(r"^([a-z_][a-z0-9_.]*): (.+)$", re.S)


def _field_error(exc: ValidationError) -> APIError:
    where, message = field_problem(exc)
    return APIError(400, "bad_request", f"field {where!r}: {message}")


async def _json(request: Request, max_body: int = MAX_BODY) -> Any:
    """The request's JSON body. Only ``application/json`` is read: browsers send other
    types cross-site without asking, so this also keeps other sites' pages out."""
    same_origin(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise APIError(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.body()
    if len(raw) > max_body:
        raise APIError(413, "too_large", f"the body is larger than {max_body} bytes")
    try:
        return orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:
        raise APIError(400, "bad_request", "the body is not valid JSON") from None


def same_origin(request: Request) -> None:
    """Refuse a state-changing request that a browser sent from another site."""
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") != f"{request.url.scheme}://{request.url.netloc}":
        raise APIError(403, "cross_origin", f"requests from {origin[:100]} are not accepted")


def _parse(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise APIError(400, "bad_request", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _field_error(exc) from None


def _sql(request: Request) -> SQLStore:
    return request.app.state.sql  # type: ignore[no-any-return]


def _live(request: Request) -> LiveStreams:
    return request.app.state.live  # type: ignore[no-any-return]


def _alert_json(event: AlertEvent) -> dict[str, Any]:
    data = event.model_dump(mode="json")
    data["silenced"] = bool(event.silenced_by)
    return data


def _audit_event(principal: Principal, action: str, target: str, reason: str = "", *,
                 before: dict[str, Any] | None = None,
                 after: dict[str, Any] | None = None) -> AuditEvent:
    return AuditEvent(tenant=principal.tenant, actor=principal.name, action=action,
                      target=target, reason=reason[:2000], before=before, after=after)


def _tenant_matchers(matchers: list[Matcher]) -> list[Matcher]:
    """The ``tenant`` matchers among ``matchers``."""
    return [m for m in matchers if m.label == "tenant"]


def scoped(matchers: list[Matcher], principal: Principal, field: str) -> list[Matcher]:
    """``matchers`` narrowed to the caller's tenant: a silence or rule made through the API
    only ever concerns its own tenant's alerts. A tenant matcher naming another is refused."""
    own = Matcher(label="tenant", op="=", value=principal.tenant)
    for matcher in _tenant_matchers(matchers):
        if matcher != own:
            raise APIError(400, "bad_request", f"field {field!r}: you can only match your own "
                           f"tenant ({principal.tenant!r})")
    return matchers if own in matchers else [*matchers, own]


def owner(matchers: list[Matcher]) -> str | None:
    """The tenant a rule or silence is scoped to; None for a global one (the rules file)."""
    tenants = {m.value for m in _tenant_matchers(matchers) if m.op == "="}
    return next(iter(tenants)) if len(tenants) == 1 else None


async def _changed(request: Request) -> None:
    """Tell the stream workers to reload rules and silences."""
    try:
        await _live(request).bump(_live(request).keys.rules_version)
    except LiveStreamError as exc:  # workers also reload every 30 s
        log.warning("cannot signal the rule change: %s", exc)


# alerts --------------------------------------------------------------------------------
async def list_alerts(request: Request) -> Response:
    """
    summary: Alerts (the newest event of each), newest first.
    parameters:
      - {name: state, in: query, description: "comma list of pending, firing, acknowledged,
          resolved (default all)", schema: {type: string}}
      - {name: severity, in: query, schema: {type: string, enum: [info, warning, critical]}}
      - {name: server, in: query, schema: {type: string}}
      - {name: rule, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 5000}}
    responses:
      200: {description: "{alerts: [...]}"}
      400: {description: bad parameter}
    """
    principal = await require(request, Role.VIEWER)
    params = request.query_params
    states = None
    if params.get("state"):
        states = [s.strip() for s in params["state"].split(",") if s.strip()]
        unknown = [s for s in states if s not in AlertState.__members__.values()]
        if unknown:
            raise bad_parameter("state", f"unknown state(s) {', '.join(unknown)}; known: "
                                f"{', '.join(AlertState)}")
    severity = params.get("severity")
    if severity is not None and severity not in Severity.__members__.values():
        raise bad_parameter("severity", f"must be one of {', '.join(Severity)}")
    server = params.get("server")
    if server is not None:
        server_id_param(server, "server")
    rule = params.get("rule")
    if rule is not None:
        server_id_param(rule, "rule")
    try:
        limit = int(params.get("limit", "500"))
    except ValueError:
        raise bad_parameter("limit", "must be a whole number") from None
    if not 1 <= limit <= 5000:
        raise bad_parameter("limit", "must be between 1 and 5000")
    alerts = await _sql(request).list_alerts(tenant=principal.tenant, states=states,
                                             severity=severity, server_id=server, rule_id=rule,
                                             limit=limit)
    return ORJSONResponse({"alerts": [_alert_json(a) for a in alerts]})


async def _current(request: Request, alert: str, principal: Principal) -> AlertEvent:
    """The alert's newest event: Redis first (written by the worker as it happens), then
    the SQL store. Another tenant's alert is not found."""
    if not alert.isalnum() or len(alert) > 64:
        raise bad_parameter("id", "not an alert id")
    raw = None
    try:
        raw = await _live(request).hget(_live(request).keys.alerts, alert)
    except LiveStreamError as exc:
        log.warning("cannot read the alert from Redis: %s", exc)
    found = None
    if raw:
        try:
            found = AlertEvent.model_validate_json(raw)
        except ValidationError as exc:  # a damaged live copy: the SQL store decides
            log.warning("ignoring a bad live copy of alert %s: %s", alert, str(exc)[:200])
    stored = await _sql(request).get_alert(alert)
    if stored is not None and (found is None or stored.seq > found.seq):
        found = stored
    if found is None or found.tenant != principal.tenant:
        raise APIError(404, "not_found", f"no alert {alert!r} in tenant {principal.tenant!r}")
    return found


async def get_alert(request: Request) -> Response:
    """
    summary: One alert and its history (every event, oldest first).
    responses:
      200: {description: "{alert, history: [...]}"}
      404: {description: unknown alert}
    """
    principal = await require(request, Role.VIEWER)
    alert = await _current(request, request.path_params["id"], principal)
    history = await _sql(request).alert_history(alert.alert_id)
    if not history or history[-1].seq < alert.seq:  # SQL lags the live copy a little
        history.append(alert)
    return ORJSONResponse({"alert": _alert_json(alert),
                           "history": [_alert_json(e) for e in history]})


async def _send_action(request: Request, action: AlertAction) -> None:
    await bus.send(request, ALERT_ACTIONS, action.server_id, action.model_dump_json().encode())


async def ack(request: Request) -> Response:
    """
    summary: Acknowledge a firing alert as the signed-in user (operator; comment required).
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [comment], properties: {
            comment: {type: string}, expires_s: {type: number}}}
    responses:
      202: {description: accepted; the change arrives on /api/v1/alerts/stream}
      400: {description: "bad field, named"}
      404: {description: unknown alert}
      409: {description: the alert is not firing}
    """
    principal = await require(request, Role.OPERATOR)
    body: AckBody = _parse(AckBody, await _json(request))
    alert = await _current(request, request.path_params["id"], principal)
    if alert.state is not AlertState.FIRING:
        raise APIError(409, "conflict", f"only a firing alert can be acknowledged; this one "
                       f"is {alert.state}" + (f" by {alert.acked_by}" if alert.acked_by else ""))
    action = AlertAction(server_id=alert.server_id, tenant=alert.tenant, action="ack",
                         alert_id=alert.alert_id, actor=principal.name, comment=body.comment,
                         expires_s=body.expires_s)
    await bus.audit(request, _audit_event(
        principal, "alert.ack", f"alert:{alert.alert_id}", body.comment,
        before={"state": str(alert.state)},
        after={"state": "acknowledged", "expires_s": body.expires_s}))
    await _send_action(request, action)
    log.info("alert %s acknowledged by %s: %s", alert.alert_id, principal.name, body.comment)
    return ORJSONResponse({"accepted": True, "action_id": action.id}, status_code=202)


async def unack(request: Request) -> Response:
    """
    summary: Withdraw an acknowledgement (operator; comment required).
    responses:
      202: {description: accepted}
      400: {description: "bad field, named"}
      404: {description: unknown alert}
      409: {description: the alert is not acknowledged}
    """
    principal = await require(request, Role.OPERATOR)
    body: UnackBody = _parse(UnackBody, await _json(request))
    alert = await _current(request, request.path_params["id"], principal)
    if alert.state is not AlertState.ACKNOWLEDGED:
        raise APIError(409, "conflict", f"the alert is not acknowledged (it is {alert.state})")
    action = AlertAction(server_id=alert.server_id, tenant=alert.tenant, action="unack",
                         alert_id=alert.alert_id, actor=principal.name, comment=body.comment)
    await bus.audit(request, _audit_event(
        principal, "alert.unack", f"alert:{alert.alert_id}", body.comment,
        before={"state": str(alert.state), "acked_by": alert.acked_by},
        after={"state": "firing"}))
    await _send_action(request, action)
    return ORJSONResponse({"accepted": True, "action_id": action.id}, status_code=202)


async def alerts_stream(request: Request) -> Response:
    """
    summary: Server-Sent Events of your tenant's alert events (event name `alert`).
    parameters:
      - {name: Last-Event-ID, in: header, schema: {type: string}}
    responses:
      200: {description: text/event-stream}
    """
    principal = await require(request, Role.VIEWER)
    return await sse_response(request, _live(request).keys.alerts_stream,
                              of_tenant(principal.tenant))


async def server_alert_events(request: Request) -> Response:
    """
    summary: Alert events of one server over a range (chart marks), oldest first.
    parameters:
      - {name: range, in: query, description: "15m, 1h, 6h, 24h", schema: {type: string}}
    responses:
      200: {description: "{events: [...]}"}
      404: {description: "unknown server, or another tenant's"}
    """
    principal = await require(request, Role.VIEWER)
    server = server_id_param(request.path_params["id"])
    await own_server(request, principal, server)
    range_s = series_logic.parse_range(request.query_params.get("range", "1h"))
    since = datetime.now(UTC) - timedelta(seconds=range_s)
    events = await _sql(request).server_alert_events(server, since)
    return ORJSONResponse({"events": [_alert_json(e) for e in events]})


# silences ------------------------------------------------------------------------------
async def list_silences(request: Request) -> Response:
    """
    summary: Your tenant's silences (active ones, or all with include_expired=1).
    responses:
      200: {description: "{silences: [...]}"}
    """
    principal = await require(request, Role.VIEWER)
    include = request.query_params.get("include_expired", "0") in ("1", "true", "yes")
    silences = [s for s in await _sql(request).list_silences(include_expired=include)
                if owner(s.matchers) == principal.tenant]
    return ORJSONResponse({"silences": [s.model_dump(mode="json") for s in silences]})


async def create_silence(request: Request) -> Response:
    """
    summary: Create a silence of your tenant's alerts (operator; matchers, a window, why).
    responses:
      201: {description: "{silence}"}
      400: {description: "bad field, named"}
    """
    principal = await require(request, Role.OPERATOR)
    body: SilenceBody = _parse(SilenceBody, await _json(request))
    matchers = scoped(body.matchers, principal, "matchers")
    now = datetime.now(UTC)
    starts = body.starts_at or now
    if (body.ends_at is None) == (body.duration_s is None):
        raise APIError(400, "bad_request", "field 'ends_at': give either ends_at or "
                       "duration_s")
    if body.ends_at is not None and body.ends_at <= now:
        raise APIError(400, "bad_request", "field 'ends_at': must be in the future")
    try:
        ends = body.ends_at or starts + timedelta(seconds=body.duration_s or 0)
    except OverflowError:
        raise APIError(400, "bad_request", "field 'starts_at': too far in the future") from None
    if ends - now > MAX_SILENCE:
        raise APIError(400, "bad_request", "field 'ends_at': a silence may last at most "
                       f"{MAX_SILENCE.days} days from now")
    try:
        silence = Silence(id=new_id(), matchers=matchers, starts_at=starts, ends_at=ends,
                          created_by=principal.name, comment=body.comment, created_at=now)
    except ValidationError as exc:
        raise _field_error(exc) from None
    await bus.audit(request, _audit_event(principal, "silence.create", f"silence:{silence.id}",
                                          body.comment, after=silence.model_dump(mode="json")))
    await _sql(request).add_silence(silence)
    await _changed(request)
    log.info("silence %s created by %s: %s", silence.id, silence.created_by, silence.comment)
    return ORJSONResponse({"silence": silence.model_dump(mode="json")}, status_code=201)


async def expire_silence(request: Request) -> Response:
    """
    summary: Expire one of your tenant's silences now (operator).
    responses:
      200: {description: "{silence}"}
      404: {description: "unknown silence, or another tenant's"}
      409: {description: the silence has ended already}
    """
    same_origin(request)
    principal = await require(request, Role.OPERATOR)
    now = datetime.now(UTC)
    found = await _sql(request).get_silence(request.path_params["id"][:64])
    if found is None or owner(found.matchers) != principal.tenant:
        raise APIError(404, "not_found", f"no silence {request.path_params['id'][:64]!r} in "
                       f"tenant {principal.tenant!r}")
    if found.ends_at <= now:
        raise APIError(409, "conflict", f"silence {found.id} has ended already")
    await bus.audit(request, _audit_event(principal, "silence.expire", f"silence:{found.id}",
                                          before={"ends_at": found.ends_at.isoformat()},
                                          after={"ends_at": now.isoformat()}))
    silence = await _sql(request).expire_silence(found.id, now)
    if silence is None:
        raise APIError(404, "not_found", f"no silence {found.id!r}")
    await _changed(request)
    log.info("silence %s expired by %s", silence.id, principal.name)
    return ORJSONResponse({"silence": silence.model_dump(mode="json"),
                           "expired_by": principal.name})


# rules ---------------------------------------------------------------------------------
async def list_rules(request: Request) -> Response:
    """
    summary: Alert rules that apply to your tenant (its own and the global ones of the file).
    responses:
      200: {description: "{rules: [...]}"}
    """
    principal = await require(request, Role.VIEWER)
    rules = [r for r in await _sql(request).list_rules() if _visible(r, principal)]
    return ORJSONResponse({"rules": [r.model_dump(mode="json") for r in rules]})


def _visible(rule: AlertRule, principal: Principal) -> bool:
    return owner(rule.match) in (None, principal.tenant)


def _rule(data: Any, principal: Principal, rule_id: str | None = None) -> AlertRule:
    """The rule in the body, scoped to the caller's tenant."""
    if isinstance(data, dict) and rule_id is not None:
        if data.setdefault("id", rule_id) != rule_id:
            raise APIError(400, "bad_request", "field 'id': differs from the id in the path")
    rule: AlertRule = _parse(AlertRule, data)
    return rule.model_copy(update={"match": scoped(rule.match, principal, "match")})


async def _own_rule(request: Request, principal: Principal, rule_id: str) -> AlertRule | None:
    """The stored rule ``rule_id`` if the caller may change it; None if there is none; 404
    for another tenant's rule, 409 for a global one."""
    _not_from_file(request, rule_id)
    stored = await _sql(request).get_rule(rule_id)
    if stored is None:
        return None
    if owner(stored.match) is None:
        raise APIError(409, "conflict", f"rule {rule_id!r} applies to every tenant; only the "
                       "rules file changes it")
    if owner(stored.match) != principal.tenant:
        raise APIError(404, "not_found", f"no rule {rule_id!r} in tenant {principal.tenant!r}")
    return stored


def _rule_audit(principal: Principal, action: str, rule_id: str, before: AlertRule | None,
                after: AlertRule | None) -> AuditEvent:
    return _audit_event(principal, action, f"rule:{rule_id}",
                        before=None if before is None else before.model_dump(mode="json"),
                        after=None if after is None else after.model_dump(mode="json"))


async def create_rule(request: Request) -> Response:
    """
    summary: 'Create an alert rule, e.g. {"id": "cpu-high", "expr": "cpu.total > 90 for 2m"}'
    responses:
      201: {description: "{rule}"}
      400: {description: invalid rule; the message names the field}
      409: {description: a rule with this id exists}
    """
    principal = await require(request, Role.ADMIN)
    rule = _rule(await _json(request), principal)
    if await _sql(request).get_rule(rule.id) is not None:
        raise APIError(409, "conflict", f"rule {rule.id!r} exists; PUT /api/v1/alerts/rules/"
                       f"{rule.id} replaces it")
    await bus.audit(request, _rule_audit(principal, "rule.create", rule.id, None, rule))
    await _sql(request).upsert_rule(rule)
    await _changed(request)
    return ORJSONResponse({"rule": rule.model_dump(mode="json")}, status_code=201)


async def get_rule(request: Request) -> Response:
    """
    summary: One alert rule.
    responses:
      200: {description: "{rule}"}
      404: {description: unknown rule}
    """
    principal = await require(request, Role.VIEWER)
    rule = await _sql(request).get_rule(server_id_param(request.path_params["id"]))
    if rule is None or not _visible(rule, principal):
        raise APIError(404, "not_found", f"no rule {request.path_params['id']!r}")
    return ORJSONResponse({"rule": rule.model_dump(mode="json")})


def _not_from_file(request: Request, rule_id: str) -> None:
    path = request.app.state.settings.alert_rules_file
    if rule_id in request.app.state.file_rules:
        raise APIError(409, "conflict", f"rule {rule_id!r} comes from the rules file {path}; "
                       "change it there (the file is loaded at every start)")


async def put_rule(request: Request) -> Response:
    """
    summary: Create or replace an alert rule.
    responses:
      200: {description: "{rule}"}
      400: {description: invalid rule; the message names the field}
      409: {description: the rule comes from the rules file}
    """
    principal = await require(request, Role.ADMIN)
    rule_id = server_id_param(request.path_params["id"])
    before = await _own_rule(request, principal, rule_id)
    rule = _rule(await _json(request), principal, rule_id)
    await bus.audit(request, _rule_audit(
        principal, "rule.create" if before is None else "rule.update", rule_id, before, rule))
    created = await _sql(request).upsert_rule(rule)
    await _changed(request)
    return ORJSONResponse({"rule": rule.model_dump(mode="json")},
                          status_code=201 if created else 200)


async def delete_rule(request: Request) -> Response:
    """
    summary: Delete an alert rule (its alerts resolve).
    responses:
      204: {description: deleted}
      404: {description: unknown rule}
      409: {description: the rule comes from the rules file}
    """
    same_origin(request)
    principal = await require(request, Role.ADMIN)
    rule_id = server_id_param(request.path_params["id"])
    before = await _own_rule(request, principal, rule_id)
    if before is None:
        raise APIError(404, "not_found", f"no rule {rule_id!r}")
    await bus.audit(request, _rule_audit(principal, "rule.delete", rule_id, before, None))
    if not await _sql(request).delete_rule(rule_id):
        raise APIError(404, "not_found", f"no rule {rule_id!r}")
    await _changed(request)
    return Response(status_code=204)


# the rules file ------------------------------------------------------------------------
class RulesFileError(ValueError):
    pass


def read_rules_file(path: Path) -> list[AlertRule]:
    """Rules from a YAML file: ``rules: [{id, expr | channel/op/threshold, ...}, ...]``."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RulesFileError(f"cannot read alert rules from {path}: {exc}") from None
    items = (data or {}).get("rules") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise RulesFileError(f"{path}: expected a top-level 'rules:' list")
    rules, seen = [], set()
    for index, item in enumerate(items):
        try:
            rule = AlertRule.model_validate(item)
        except ValidationError as exc:
            where, message = field_problem(exc)
            raise RulesFileError(f"{path}: rule #{index + 1}: field {where!r}: "
                                 f"{message}") from None
        if rule.id in seen:
            raise RulesFileError(f"{path}: rule #{index + 1}: duplicate id {rule.id!r}")
        seen.add(rule.id)
        rules.append(rule)
    return rules


async def load_rules_file(path: Path, sql: SQLStore, live: LiveStreams) -> list[str]:
    """Upsert the file's rules (the file owns the ids it defines: the API refuses to
    change them) and signal workers; returns their ids."""
    rules = read_rules_file(path)
    for rule in rules:
        await sql.upsert_rule(rule)
    try:
        await live.bump(live.keys.rules_version)
    except LiveStreamError as exc:
        log.warning("cannot signal the rule change: %s", exc)
    log.info("loaded %d alert rules from %s", len(rules), path)
    return [rule.id for rule in rules]

