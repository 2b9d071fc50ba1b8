"""The real Sampler on this machine, and the pieces of the collectors that are pure logic."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from agent.collectors import SampleParts, Sampler
from agent.collectors.cpu import CpuCollector
from agent.collectors.disk import DiskCollector, whole_disks
from schemas.metrics import DiskIO, MetricSample, ProcessHealth

MISSING = "fd-no-such-proc"


@dataclass
class Sleeper:
    """A copy of ``sleep`` under a name no other process on this machine has."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[Sleeper]:
    sleep = shutil.which("sleep")
    assert sleep is not None, "coreutils' sleep is needed to stand in for a watched process"
    name = f"fdslp{uuid.uuid4().hex[:8]}"  # under 15 characters: the kernel's comm limit
    binary = tmp_path / name
    shutil.copy2(sleep, binary)
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        procs.append(subprocess.Popen([str(binary), "30"]))
        return procs[-1]

    yield Sleeper(name, start)
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=10)  # reaped: no zombie left behind


def _proc(sample: MetricSample, name: str) -> ProcessHealth:
    return next(p for p in sample.processes if p.name == name)


def test_two_samples_are_valid_and_plausible() -> None:
    sampler = Sampler("host-1", "default", "host-1.example", [])
    sampler.sample(0)
    time.sleep(0.2)
    sample = sampler.sample(1)
    assert sample.server_id == "host-1" and sample.seq == 1 and sample.processes == []
    assert 0 <= sample.cpu.total <= 100
    assert len(sample.cpu.per_core) == psutil.cpu_count()
    assert sample.memory.total_bytes > 0
    assert 0 < sample.memory.used_bytes <= sample.memory.total_bytes
    assert sample.load.load1 >= 0
    assert all(0 <= fs.used_pct <= 100 and fs.total_bytes > 0 for fs in sample.filesystems)
    assert all(fs.fstype not in ("squashfs", "tmpfs") for fs in sample.filesystems)
    assert not any(d.name.startswith(("loop", "ram")) for d in sample.disks)
    MetricSample.model_validate_json(sample.model_dump_json())


def test_net_total_leaves_out_loopback() -> None:
    sampler = Sampler("host-1", "default", "host-1.example", [])
    sampler.sample(0)
    time.sleep(0.2)
    sample = sampler.sample(1)
    outside = [n for n in sample.nets if n.name != "lo"]
    assert sample.net.rx_bps == pytest.approx(sum(n.rx_bps for n in outside))
    assert sample.net.tx_pps == pytest.approx(sum(n.tx_pps for n in outside))
    assert sample.disk.read_bps >= 0 and sample.disk.write_ops >= 0


def test_watched_process_up_down_and_restarts(sleeper: Sleeper) -> None:
    sampler = Sampler("host-1", "default", "host-1.example", [sleeper.name, MISSING])
    first = sleeper.start()
    health = _proc(sampler.sample(0), sleeper.name)
    assert health.up and health.instances == 1 and health.restarts == 0
    assert health.rss_bytes > 0

    _stop(first)
    health = _proc(sampler.sample(1), sleeper.name)
    assert not health.up and health.instances == 0 and health.restarts == 0

    second = sleeper.start()
    health = _proc(sampler.sample(2), sleeper.name)
    assert health.up and health.instances == 1 and health.restarts == 1

    # Replaced between two samples, never seen down: still a restart.
    _stop(second)
    sleeper.start()
    health = _proc(sampler.sample(3), sleeper.name)
    assert health.up and health.restarts == 2


def test_new_instance_next_to_a_running_one_is_not_a_restart(sleeper: Sleeper) -> None:
    sampler = Sampler("host-1", "default", "host-1.example", [sleeper.name])
    sleeper.start()
    sampler.sample(0)
    sleeper.start()
    health = _proc(sampler.sample(1), sleeper.name)
    assert health.instances == 2 and health.restarts == 0


def test_missing_process_reports_down() -> None:
    sampler = Sampler("host-1", "default", "host-1.example", [MISSING])
    health = _proc(sampler.sample(0), MISSING)
    assert health == ProcessHealth(name=MISSING, up=False, instances=0)


class _Broken:
    name = "broken"

    def collect(self, parts: SampleParts, now: float) -> None:
        raise RuntimeError("sensor on fire")


def test_a_failing_collector_does_not_fail_the_sample(caplog: pytest.LogCaptureFixture) -> None:
    sampler = Sampler("host-1", "default", "host-1.example", [],
                      collectors=[_Broken(), CpuCollector()])
    with caplog.at_level(logging.WARNING, logger="agent.collectors.registry"):
        sample = sampler.sample(0)
        sampler.sample(1)
    assert len(sample.cpu.per_core) == psutil.cpu_count()
    assert sample.memory.total_bytes == 0 and sample.disks == []
    assert [r.getMessage() for r in caplog.records].count(
        "collector broken failed; using defaults") == 1  # logged once, not every second


def test_bad_identity_fails_at_construction() -> None:
    with pytest.raises(ValueError):
        Sampler("not a valid id", "default", "host", [])


@pytest.mark.parametrize(
    ("names", "block", "expected"),
    [
        (["sda", "sda1", "sda2", "nvme0n1", "nvme0n1p1", "loop0", "ram0", "zram0"], None,
         ["sda", "nvme0n1"]),
        (["sda", "sda1", "dm-0", "md0", "loop3"], {"sda", "dm-0", "md0", "loop3"},
         ["sda", "dm-0", "md0"]),
        (["mmcblk0", "mmcblk0p1", "xvda", "xvda1"], None, ["mmcblk0", "xvda"]),
        (["cciss/c0d0", "cciss/c0d0p1"], {"cciss!c0d0"}, ["cciss/c0d0"]),
        (["sda1", "sdb"], None, ["sda1", "sdb"]),  # no sda: sda1 is all we know of it
    ],
)
def test_whole_disks(names: list[str], block: set[str] | None, expected: list[str]) -> None:
    assert whole_disks(names, block) == expected


def test_disk_total_counts_each_byte_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Partitions are left out, a device-mapper volume is listed but not added to the total."""
    (tmp_path / "sda").mkdir()
    (tmp_path / "dm-0" / "slaves" / "sda2").mkdir(parents=True)
    counters = namedtuple("counters", "read_bytes write_bytes read_count write_count")

    def fake(base: int) -> dict[str, tuple[int, ...]]:
        return {"sda": counters(base * 4, base * 2, base, base), "sda2": counters(base, 0, 1, 0),
                "dm-0": counters(base * 3, base, base, base), "loop0": counters(base, 0, 0, 0)}

    collector = DiskCollector(sys_block=str(tmp_path))
    parts = SampleParts()
    for now, base in ((0.0, 1000), (2.0, 2000)):
        reading = fake(base)
        monkeypatch.setattr(psutil, "disk_io_counters", lambda **_: reading)  # noqa: B023
        collector.collect(parts, now)
    assert [d.name for d in parts.disks] == ["sda", "dm-0"]
    assert parts.disks[0] == DiskIO(name="sda", read_bps=2000.0, write_bps=1000.0,
                                    read_ops=500.0, write_ops=500.0)
    assert parts.disk == DiskIO(name="total", read_bps=2000.0, write_bps=1000.0,
                                read_ops=500.0, write_ops=500.0)
