"""VictoriaMetrics over its HTTP API: ``/api/v1/import`` and ``/api/v1/query_range``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, Field

from connectors.errors import ConnectorError

log = logging.getLogger(__name__)


class VictoriaMetricsError(ConnectorError):
    """VictoriaMetrics could not be reached or answered with an error."""


class VMSettings(BaseModel):
    url: str = Field("http://127.0.0.1:8428", description="VictoriaMetrics base URL")
    timeout_s: float = Field(10.0, gt=0)
    batch_lines: int = Field(20_000, ge=1, description="Flush a write batch at this many lines")
    flush_interval_s: float = Field(1.0, gt=0, description="Flush a batch at least this often")
    queue_batches: int = Field(64, ge=1, description="Batches buffered before writers wait")


class VMClient:
    """Async VictoriaMetrics client (one pooled HTTP connection set)."""

    def __init__(self, settings: VMSettings) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(base_url=settings.url, timeout=settings.timeout_s,
                                       limits=httpx.Limits(max_keepalive_connections=20))

    async def close(self) -> None:
        await self._http.aclose()

    async def import_json(self, lines: Sequence[bytes]) -> None:
        """Write series in VictoriaMetrics' JSON line format (one series per line)."""
        await self._post("/api/v1/import", b"\n".join(lines) + b"\n")

    async def import_prometheus(self, lines: Sequence[str]) -> None:
        """Write samples in Prometheus text format with millisecond timestamps."""
        await self._post("/api/v1/import/prometheus", ("\n".join(lines) + "\n").encode())

    async def _post(self, path: str, body: bytes) -> None:
        try:
            resp = await self._http.post(path, content=body)
        except httpx.HTTPError as exc:
            raise VictoriaMetricsError(f"POST {path} failed: {exc!r}") from exc
        if resp.status_code >= 300:
            raise VictoriaMetricsError(f"POST {path}: HTTP {resp.status_code} {resp.text[:200]}")

    async def query_range_raw(self, query: str, start: float, end: float, step: float) -> bytes:
        """The raw JSON body of ``/api/v1/query_range``."""
        params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}s"}
        try:
            resp = await self._http.get("/api/v1/query_range", params=params)
        except httpx.HTTPError as exc:
            raise VictoriaMetricsError(f"query_range failed: {exc!r}") from exc
        if resp.status_code != 200:
            raise VictoriaMetricsError(f"query_range: HTTP {resp.status_code} {resp.text[:200]}")
        return resp.content

    async def query_range(self, query: str, start: float, end: float,
                          step: float) -> list[dict[str, Any]]:
        """The ``result`` list of a range query (matrix)."""
        body = orjson.loads(await self.query_range_raw(query, start, end, step))
        if body.get("status") != "success":
            raise VictoriaMetricsError(f"query_range: {body.get('error', body)}")
        return list(body["data"]["result"])

    async def healthy(self) -> bool:
        try:
            return (await self._http.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False
