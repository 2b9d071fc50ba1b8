"""Builders of valid messages for tests."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas import CpuStats, FsUsage, MemoryStats, MetricSample, ProcessHealth


def sample(server_id: str = "srv-1", *, cpu: float = 10.0, mem: float = 20.0,
           ts: datetime | None = None, processes: list[ProcessHealth] | None = None,
           fs_pct: float | None = None, **kw: object) -> MetricSample:
    fs = [] if fs_pct is None else [FsUsage(mount="/data", total_bytes=100,
                                            used_bytes=int(fs_pct), used_pct=fs_pct)]
    return MetricSample(
        server_id=server_id, hostname=f"{server_id}.example", ts=ts or datetime.now(UTC),
        cpu=CpuStats(total=cpu, per_core=[cpu, cpu]),
        memory=MemoryStats(total_bytes=1000, used_bytes=int(mem * 10),
                           available_bytes=1000 - int(mem * 10), used_pct=mem),
        processes=processes or [], filesystems=fs, **kw)  # type: ignore[arg-type]
