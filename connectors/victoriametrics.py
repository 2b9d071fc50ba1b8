"""VictoriaMetrics over its HTTP API: ``/api/v1/import`` and ``/api/v1/query_range``.

aiohttp rather than httpx: on the dashboard's query path the client's own overhead is
what the API adds to VictoriaMetrics' time, and aiohttp's is a fraction of httpx's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiohttp
from pydantic import BaseModel, Field

from connectors.errors import ConnectorError

log = logging.getLogger(__name__)


class VictoriaMetricsError(ConnectorError):
    """VictoriaMetrics could not be reached or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # HTTP status, None when it could not be reached

    @property
    def rejected(self) -> bool:
        """The request itself was refused (4xx): sending it again cannot help."""
        return self.status is not None and 400 <= self.status < 500


class VMSettings(BaseModel):
    url: str = Field("http://127.0.0.1:8428", description="VictoriaMetrics base URL")
    timeout_s: float = Field(10.0, gt=0)
    batch_lines: int = Field(20_000, ge=1, description="Flush a write batch at this many lines")
    flush_interval_s: float = Field(1.0, gt=0, description="Flush a batch at least this often")
    queue_batches: int = Field(64, ge=1, description="Batches buffered before writers wait")
    compress_answers: bool = Field(
        False, description="Ask VictoriaMetrics to gzip query answers: worth it over a slow "
        "link; on loopback or a LAN it only costs CPU on both sides (a 1 h chart is ~30 KB)")


class VMClient:
    """Async VictoriaMetrics client (one pooled connection set, opened on first use)."""

    def __init__(self, settings: VMSettings) -> None:
        self.settings = settings
        self._base = settings.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                connector=aiohttp.TCPConnector(limit=50, keepalive_timeout=30))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def import_json(self, lines: Sequence[bytes]) -> None:
        """Write series in VictoriaMetrics' JSON line format (one series per line)."""
        await self._post("/api/v1/import", b"\n".join(lines) + b"\n")

    async def import_prometheus(self, lines: Sequence[str]) -> None:
        """Write samples in Prometheus text format with millisecond timestamps."""
        await self._post("/api/v1/import/prometheus", ("\n".join(lines) + "\n").encode())

    async def _post(self, path: str, body: bytes) -> None:
        try:
            async with self._http().post(self._base + path, data=body) as resp:
                if resp.status >= 300:
                    text = (await resp.text())[:200]
                    raise VictoriaMetricsError(f"POST {path}: HTTP {resp.status} {text}",
                                               resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise VictoriaMetricsError(f"POST {path} failed: {exc!r}") from exc

    async def query_range_raw(self, query: str, start: float, end: float, step: float) -> bytes:
        """The raw JSON body of ``/api/v1/query_range``."""
        params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}s"}
        encoding = "gzip" if self.settings.compress_answers else "identity"
        try:
            async with self._http().get(self._base + "/api/v1/query_range", params=params,
                                        headers={"Accept-Encoding": encoding}) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise VictoriaMetricsError(f"query_range failed: {exc!r}") from exc
        if resp.status != 200:
            raise VictoriaMetricsError(f"query_range: HTTP {resp.status} {body[:200]!r}",
                                       resp.status)
        return body

    async def healthy(self) -> bool:
        try:
            async with self._http().get(self._base + "/health") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
