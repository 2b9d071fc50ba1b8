"""Simulated servers: reproducible, forceable, and each profile behaves as described."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.simulate import PROFILES, SimulatedServer
from schemas.metrics import MetricSample

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = 3600


def _run(server: SimulatedServer, seconds: int = HOUR) -> list[MetricSample | None]:
    return [server.sample(i, T0 + timedelta(seconds=i)) for i in range(seconds)]


def _values(samples: list[MetricSample | None]) -> list[MetricSample]:
    return [s for s in samples if s is not None]


def test_identity() -> None:
    server = SimulatedServer(7, tenant="acme")
    assert server.server_id == "sim-0007"
    assert server.hostname == "sim-0007.fleet.local"
    sample = SimulatedServer(7, tenant="acme", profile="steady").sample(3, T0)
    assert sample is not None
    assert (sample.server_id, sample.tenant, sample.seq, sample.ts) == ("sim-0007", "acme", 3, T0)


def test_same_seed_same_values() -> None:
    a = _run(SimulatedServer(3, seed=42), 300)
    b = _run(SimulatedServer(3, seed=42), 300)
    dump = [s and s.model_dump(exclude={"id"}) for s in a]
    assert dump == [s and s.model_dump(exclude={"id"}) for s in b]
    ids = {s.id for s in _values(a) + _values(b)}
    assert len(ids) == len(_values(a)) * 2  # ids are never repeated, even with a seed


def test_different_servers_differ() -> None:
    a = SimulatedServer(1, seed=42).sample(0, T0)
    b = SimulatedServer(2, seed=42).sample(0, T0)
    assert a is not None and b is not None and a.cpu != b.cpu


def test_profile_by_index() -> None:
    profiles = [SimulatedServer(i).profile for i in range(10)]
    assert profiles.count("steady") > len(profiles) // 2
    assert set(profiles) == set(PROFILES)


def test_per_core_is_consistent_with_total() -> None:
    for sample in _values(_run(SimulatedServer(5, seed=1, profile="critical"), 600)):
        cores = sample.cpu.per_core
        assert sample.cpu.total == pytest.approx(sum(cores) / len(cores))
        assert sample.cpu.user + sample.cpu.system + sample.cpu.steal == pytest.approx(
            sample.cpu.total)
        assert sample.memory.used_bytes + sample.memory.available_bytes == sample.memory.total_bytes
        assert [d.name for d in sample.disks] == ["sda", "nvme0n1"]
        assert [n.name for n in sample.nets] == ["eth0", "lo"]
        assert sample.net.rx_bps == sample.nets[0].rx_bps  # loopback is not in the total
        assert [f.mount for f in sample.filesystems] == ["/", "/var"]
        assert [p.name for p in sample.processes] == ["nginx", "postgres"]


def test_forced_critical_then_back() -> None:
    server = SimulatedServer(0, seed=1, profile="steady")
    server.force("critical", 60)
    for second in (0, 30, 59):
        sample = server.sample(second, T0 + timedelta(seconds=second))
        assert sample is not None
        assert sample.cpu.total >= 97 and sample.memory.used_pct >= 96
    after = server.sample(61, T0 + timedelta(seconds=61))
    assert after is not None and after.cpu.total < 90


def test_forced_ok_on_a_critical_server() -> None:
    server = SimulatedServer(0, seed=1, profile="critical")
    server.force("ok", HOUR)
    for sample in _values(_run(server, 900)):
        assert sample.cpu.total < 30 and sample.memory.used_pct < 50


def test_forced_silent() -> None:
    server = SimulatedServer(0, seed=1, profile="steady")
    server.force("silent", 10)
    assert server.sample(0, T0) is None
    assert server.sample(9, T0 + timedelta(seconds=9)) is None
    assert server.sample(10, T0 + timedelta(seconds=10)) is not None


def test_force_rejects_unknown_state() -> None:
    with pytest.raises(ValueError):
        SimulatedServer(0).force("melting", 10)


def test_steady_stays_normal() -> None:
    samples = _run(SimulatedServer(0, seed=3, profile="steady"))
    assert all(s is not None for s in samples)
    assert max(s.cpu.total for s in _values(samples)) < 90


@pytest.mark.parametrize("profile", ["spiky", "critical", "flapping"])
def test_profiles_have_high_and_normal_values(profile: str) -> None:
    cpu = [s.cpu.total for s in _values(_run(SimulatedServer(4, seed=3, profile=profile)))]
    assert max(cpu) >= 95 and min(cpu) < 60
    assert sum(c < 80 for c in cpu) > len(cpu) // 3  # mostly normal, in between


def test_critical_profile_holds_memory_high_for_a_while() -> None:
    samples = _values(_run(SimulatedServer(4, seed=3, profile="critical")))
    high = [s.memory.used_pct > 95 for s in samples]
    longest = run = 0
    for flag in high:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    assert longest >= 60 and not all(high)


def test_silent_profile_goes_quiet_and_comes_back() -> None:
    samples = _run(SimulatedServer(9, seed=3, profile="silent"))
    gaps, run = [], 0
    for sample in samples[samples.index(next(s for s in samples if s)):]:  # skip a first gap
        if sample is None:
            run += 1
        elif run:
            gaps.append(run)
            run = 0
    assert gaps and all(60 <= gap <= 121 for gap in gaps)
    assert len(_values(samples)) > HOUR // 2


def test_processes_restart_now_and_then() -> None:
    samples = _values(_run(SimulatedServer(8, seed=3, profile="flapping")))
    nginx = [s.processes[0] for s in samples]
    assert any(not p.up for p in nginx) and nginx[-1].restarts > 0


def test_naive_time_is_rejected() -> None:
    with pytest.raises(ValueError):
        SimulatedServer(0).sample(0, datetime(2026, 1, 1))
