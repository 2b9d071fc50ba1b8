"""HTTP errors as JSON ``{"error": {"code", "message"}}`` (DESIGN.md, HTTP API)."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger(__name__)


class APIError(HTTPException):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status_code=status, detail=message)
        self.code = code


def bad_parameter(name: str, problem: str) -> APIError:
    return APIError(400, "bad_parameter", f"parameter {name!r}: {problem}")


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = getattr(exc, "code", {404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"))
    return error_response(exc.status_code, code, str(exc.detail))


async def upstream_error(request: Request, exc: Exception) -> Response:
    log.error("upstream failure on %s: %s", request.url.path, exc)
    return error_response(503, "upstream_unavailable",
                          "a backing service (Redis, VictoriaMetrics, the SQL store or the "
                          "event log) is unavailable; try again")
