"""Simulated servers for demos, load tests and the dev stack.

A :class:`SimulatedServer` makes the samples a real agent would send, from its own random
generator and the time it is given: a daily sine plus a faster wave, noise and mean-reverting
random walks for CPU and memory, per-core values whose mean is the total, two disks, two
interfaces, two filesystems and two watched processes that now and then restart. It is pure:
no I/O, and the clock is read only when ``now`` is not given.

Profiles (``index % 10`` picks one when none is given; ``PROFILE_BY_INDEX``):

* ``steady`` — normal load only (CPU stays below 85 %);
* ``spiky`` — CPU bursts to 95-100 % for about 20 s, every few minutes;
* ``critical`` — CPU and memory climb above 95 %, stay there for 1-2 minutes, then recover,
  in cycles of 4-7 minutes;
* ``silent`` — sends nothing (``sample()`` returns ``None``) for 60-120 s in every 5-10 minutes;
* ``flapping`` — CPU jumps between normal and above 90 % every 5-15 s, nginx restarts often.

:meth:`SimulatedServer.force` pins a server to ``critical``, ``ok`` or ``silent`` for a while.
With a ``seed`` the values are reproducible for the same calls; message ids are always fresh.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.envelope import utcnow
from schemas.metrics import FsUsage, MetricSample

PROFILES = ("steady", "spiky", "critical", "silent", "flapping")
PROFILE_BY_INDEX = ("steady",) * 6 + ("spiky", "critical", "flapping", "silent")
FORCE_STATES = ("critical", "ok", "silent")

GiB = 2**30
DAY_S = 86_400.0
MAX_DT = 60.0  # a gap longer than this (silence) advances the walks as if it were a minute
FS_REFRESH_S = 30.0  # filesystems change slowly: their models are rebuilt this often
TAU = 2 * math.pi

Json = dict[str, Any]


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


def _noise(rng: random.Random) -> float:
    """Cheap bell-ish noise in -1..1 (standard deviation about 0.41); ``gauss`` costs 10x."""
    return rng.random() + rng.random() - 1.0


def _rhythm(rng: random.Random, profile: str) -> tuple[float, float]:
    """(period, episode length) in seconds of the profile's episodes."""
    if profile == "spiky":
        return rng.uniform(120, 300), rng.uniform(15, 25)
    if profile == "critical":
        return rng.uniform(240, 420), rng.uniform(60, 120)
    if profile == "silent":
        return rng.uniform(300, 600), rng.uniform(60, 120)
    if profile == "flapping":
        flap = rng.uniform(5, 15)
        return 2 * flap, flap
    return 600.0, 0.0


def _in_window(t: float, period: float, offset: float, length: float) -> float:
    """Seconds into the current window of ``length`` every ``period``, or -1 outside it."""
    phase = (t + offset) % period
    return phase if phase < length else -1.0


@dataclass(frozen=True, slots=True)
class _Traits:
    """What stays the same for one server: size, baseline load and the profile's rhythm."""

    cores: int
    mem_total: int
    swap_total: int
    cpu_base: float
    cpu_daily: float  # amplitude of the daily sine, as a share of cpu_base
    mem_base: float
    day_phase: float
    wave_period: float
    wave_amp: float
    user_share: float
    disk_bps: float
    net_bps: float
    tx_ratio: float
    root_total: int
    var_total: int
    period: float  # cycle of the profile's episodes (s)
    offset: float
    episode: float  # length of a spike, critical hold, silence or flap (s)

    @classmethod
    def draw(cls, rng: random.Random, profile: str) -> _Traits:
        period, episode = _rhythm(rng, profile)
        return cls(
            cores=rng.choice((2, 4, 4, 8, 8, 16)), mem_total=rng.choice((8, 16, 32, 64)) * GiB,
            swap_total=rng.choice((0, 2, 4)) * GiB, cpu_base=rng.uniform(10, 35),
            cpu_daily=rng.uniform(0.2, 0.6), mem_base=rng.uniform(30, 60),
            day_phase=rng.uniform(0, TAU), wave_period=rng.uniform(300, 900),
            wave_amp=rng.uniform(2, 6), user_share=rng.uniform(0.6, 0.8),
            disk_bps=rng.uniform(2e5, 2e7), net_bps=rng.uniform(1e5, 5e7),
            tx_ratio=rng.uniform(0.3, 3.0), root_total=rng.choice((50, 100, 200)) * 10**9,
            var_total=rng.choice((200, 500, 2000)) * 10**9, period=period,
            offset=rng.uniform(0, 3600), episode=episode,
        )


@dataclass(slots=True)
class _Proc:
    """A watched process: restarts now and then (more often when flapping)."""

    name: str
    instances: int
    cpu_share: float
    rss_each: int
    restart_per_s: float
    restarts: int = 0
    down_until: float = 0.0

    def step(self, rng: random.Random, t: float, dt: float, cpu: float, cores: int) -> Json:
        if t >= self.down_until and rng.random() < self.restart_per_s * dt:
            self.restarts += 1
            self.down_until = t + rng.uniform(0.5, 4.0)
        if t < self.down_until:
            return {"name": self.name, "up": False, "restarts": self.restarts}
        return {"name": self.name, "up": True, "instances": self.instances,
                "cpu_pct": cpu * cores * self.cpu_share * (0.8 + 0.4 * rng.random()),
                "rss_bytes": self.instances * self.rss_each, "restarts": self.restarts,
                "zombies": 1 if rng.random() < 0.001 else 0}


@dataclass(slots=True)
class _State:
    """What changes from one sample to the next."""

    last_t: float | None = None
    cpu_walk: float = 0.0
    mem_walk: float = 0.0
    load1: float = 0.0
    load5: float = 0.0
    load15: float = 0.0
    root_pct: float = 30.0
    var_pct: float = 40.0
    fs_t: float | None = None
    fs: list[FsUsage] = field(default_factory=list)


class SimulatedServer:
    """One simulated server; call :meth:`sample` once per interval with the (simulated) time."""

    def __init__(self, index: int, tenant: str = "default", seed: int | None = None,
                 profile: str | None = None) -> None:
        if index < 0:
            raise ValueError("index must not be negative")
        self.profile = profile or PROFILE_BY_INDEX[index % len(PROFILE_BY_INDEX)]
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; one of {PROFILES}")
        self.index, self.tenant = index, tenant
        self.server_id = f"sim-{index:04d}"
        self.hostname = f"{self.server_id}.fleet.local"
        self._rng = random.Random(f"{seed}:{index}") if seed is not None else random.Random()
        # Message ids come from their own, never seeded, generator: a re-run with the same seed
        # must not repeat ids (sinks deduplicate on them), and uuid4 would read os.urandom.
        self._ids = random.Random()
        self._traits = _Traits.draw(self._rng, self.profile)
        self._state = _State(root_pct=self._rng.uniform(15, 60),
                             var_pct=self._rng.uniform(20, 70))
        self._procs = self._make_procs()
        self._forced: tuple[str, float, float | None] | None = None  # state, duration, until

    def _make_procs(self) -> tuple[_Proc, _Proc]:
        rng, cores = self._rng, self._traits.cores
        flapping = self.profile == "flapping"
        return (
            _Proc("nginx", 1 + min(cores, 8), rng.uniform(0.05, 0.15), 24 * 2**20,
                  1 / 45 if flapping else 1 / 5400),
            _Proc("postgres", rng.randint(6, 14), rng.uniform(0.1, 0.3), 96 * 2**20, 1 / 7200),
        )

    def force(self, state: str, duration_s: float) -> None:
        """Pin the server to ``critical`` (CPU ≥ 97 %, memory ≥ 96 %), ``ok`` (CPU < 30 %,
        memory < 50 %) or ``silent`` (no samples) for ``duration_s`` seconds, counted from the
        next :meth:`sample`. A duration ≤ 0 lifts the pin."""
        if state not in FORCE_STATES:
            raise ValueError(f"unknown state {state!r}; one of {FORCE_STATES}")
        self._forced = (state, duration_s, None) if duration_s > 0 else None

    def sample(self, seq: int, now: datetime | None = None) -> MetricSample | None:
        """The sample taken at ``now`` (default: the current UTC time); ``None`` when silent."""
        now = now or utcnow()
        if now.tzinfo is None:
            raise ValueError("now must carry a timezone (UTC)")
        t = now.timestamp()
        mode = self._mode(t)
        if mode == "silent":
            return None
        dt = self._advance(t)
        fields = self._build(seq, now, t, dt, mode)
        fields["id"] = f"{self._ids.getrandbits(128):032x}"
        return MetricSample.model_validate(fields)

    def _mode(self, t: float) -> str:
        """``silent``, ``critical`` (full pressure), ``ok`` or ``auto`` (the profile decides)."""
        if self._forced is not None:
            state, duration, until = self._forced
            if until is None:
                until = t + duration
                self._forced = (state, duration, until)
            if t < until:
                return state
            self._forced = None
        traits = self._traits
        if self.profile == "silent" and _in_window(t, traits.period, traits.offset,
                                                   traits.episode) >= 0:
            return "silent"
        return "auto"

    def _advance(self, t: float) -> float:
        """Seconds since the previous sample (1 s for the first one, at most ``MAX_DT``)."""
        last, self._state.last_t = self._state.last_t, t
        return 1.0 if last is None else _clamp(t - last, 0.0, MAX_DT)

    def _pressure(self, t: float, mode: str) -> tuple[float, float]:
        """How far CPU and memory are pushed from normal towards critical (0..1 each)."""
        traits, profile = self._traits, self.profile
        if mode != "auto":
            return (1.0, 1.0) if mode == "critical" else (0.0, 0.0)
        if profile in ("spiky", "flapping"):
            hot = _in_window(t, traits.period, traits.offset, traits.episode) >= 0
            return (1.0 if hot else 0.0), 0.0
        if profile == "critical":
            level = self._critical_level(t)
            return level, level
        return 0.0, 0.0

    def _critical_level(self, t: float) -> float:
        """Ramp up for 60 s, hold for the episode, ramp down for 30 s, rest for the remainder."""
        traits = self._traits
        phase = _in_window(t, traits.period, traits.offset, 90.0 + traits.episode)
        if phase < 0:
            return 0.0
        if phase < 60.0:
            return phase / 60.0
        return 1.0 if phase < 60.0 + traits.episode else (90.0 + traits.episode - phase) / 30.0

    def _build(self, seq: int, now: datetime, t: float, dt: float, mode: str) -> Json:
        cpu_push, mem_push = self._pressure(t, mode)
        cpu = self._cpu(t, dt, cpu_push, mode)
        memory = self._memory(t, dt, mem_push, mode)
        total = cpu["total"]
        return {
            "server_id": self.server_id, "tenant": self.tenant, "hostname": self.hostname,
            "ts": now, "seq": seq, "cpu": cpu, "memory": memory, "load": self._load(dt, total),
            **self._io(total), "filesystems": self._filesystems(t),
            "processes": [p.step(self._rng, t, dt, total, self._traits.cores)
                          for p in self._procs],
        }

    # -- CPU, memory, load ---------------------------------------------------------------

    def _normal_cpu(self, t: float, dt: float) -> float:
        traits, state, rng = self._traits, self._state, self._rng
        state.cpu_walk = _walk(rng, state.cpu_walk, dt, tau=120.0, sigma=0.9)
        daily = traits.cpu_base * traits.cpu_daily * math.sin(TAU * t / DAY_S + traits.day_phase)
        wave = traits.wave_amp * math.sin(TAU * t / traits.wave_period + traits.day_phase)
        return _clamp(traits.cpu_base + daily + wave + state.cpu_walk + 5 * _noise(rng), 3, 85)

    def _cpu(self, t: float, dt: float, push: float, mode: str) -> Json:
        rng, traits = self._rng, self._traits
        normal = self._normal_cpu(t, dt)
        if mode == "ok":
            normal = min(normal, 25.0)
        target = normal + (rng.uniform(97.5, 99.5) - normal) * push
        floor = 97.0 if push >= 1.0 else 0.0
        spread = min(10.0, 2.0 + 0.3 * target) * (1.0 - push) + 2.0 * push
        noise = rng.random
        per_core = [min(100.0, max(floor, target + spread * (noise() - 0.5)))
                    for _ in range(traits.cores)]
        total = sum(per_core) / len(per_core)
        if mode == "ok":  # noise must not lift an "ok" server out of its band
            per_core = [min(v, 29.0) for v in per_core]
            total = sum(per_core) / len(per_core)
        steal = min(total, rng.random() * 0.5)
        user = (total - steal) * traits.user_share
        return {"total": total, "per_core": per_core, "user": user,
                "system": total - steal - user, "steal": steal,
                "iowait": min(100.0 - total, 0.2 + 2.0 * rng.random() * (1 - push))}

    def _memory(self, t: float, dt: float, push: float, mode: str) -> Json:
        traits, state, rng = self._traits, self._state, self._rng
        state.mem_walk = _walk(rng, state.mem_walk, dt, tau=600.0, sigma=0.3)
        daily = 5 * traits.cpu_daily * math.sin(TAU * t / DAY_S + traits.day_phase)
        normal = _clamp(traits.mem_base + daily + state.mem_walk + 0.5 * _noise(rng), 5, 88)
        pct = normal + (rng.uniform(96.5, 99.0) - normal) * push
        pct = _clamp(min(pct, 45.0) if mode == "ok" else pct, 96.0 if push >= 1 else 0, 100)
        used = int(traits.mem_total * pct / 100)
        swap_pct = _clamp((pct - 90) * 6, 1, 100) if traits.swap_total else 0.0
        return {"total_bytes": traits.mem_total, "used_bytes": used,
                "available_bytes": traits.mem_total - used, "used_pct": pct,
                "swap_total_bytes": traits.swap_total, "swap_used_pct": swap_pct,
                "swap_used_bytes": int(traits.swap_total * swap_pct / 100)}

    def _load(self, dt: float, cpu: float) -> Json:
        state, target = self._state, self._traits.cores * cpu / 100 * 1.1
        state.load1 += (target - state.load1) * (1 - math.exp(-dt / 60))
        state.load5 += (target - state.load5) * (1 - math.exp(-dt / 300))
        state.load15 += (target - state.load15) * (1 - math.exp(-dt / 900))
        return {"load1": state.load1, "load5": state.load5, "load15": state.load15}

    # -- disks, network, filesystems -----------------------------------------------------

    def _io(self, cpu: float) -> Json:
        rng, traits = self._rng, self._traits
        activity = 0.3 + cpu / 100
        disks = [_disk(rng, "sda", traits.disk_bps * 0.2 * activity, 8192),
                 _disk(rng, "nvme0n1", traits.disk_bps * activity, 32768)]
        eth0 = _nic(rng, "eth0", traits.net_bps * activity, traits.tx_ratio, 900.0, 0.002)
        lo = _nic(rng, "lo", 2e4 * activity, 1.0, 4000.0, 0.0)
        return {"disk": _total(disks), "disks": disks,
                "net": dict(eth0, name="total"), "nets": [eth0, lo]}

    def _filesystems(self, t: float) -> list[FsUsage]:
        """Used space grows slowly on /var (with a log rotation now and then)."""
        traits, state, rng = self._traits, self._state, self._rng
        if state.fs_t is not None and 0 <= t - state.fs_t < FS_REFRESH_S:
            return state.fs
        dt = 0.0 if state.fs_t is None else _clamp(t - state.fs_t, 0, 3600)
        state.fs_t = t
        state.root_pct = _clamp(state.root_pct + 0.05 * _noise(rng), 5, 90)
        state.var_pct += 0.0005 * dt + 0.05 * _noise(rng)
        if state.var_pct > 88:  # log rotation
            state.var_pct -= 25
        state.fs = [_fs("/", "/dev/sda1", "ext4", traits.root_total, state.root_pct),
                    _fs("/var", "/dev/nvme0n1p1", "xfs", traits.var_total,
                        _clamp(state.var_pct, 1, 100))]
        return state.fs


def _walk(rng: random.Random, value: float, dt: float, tau: float, sigma: float) -> float:
    """One step of a mean-reverting random walk (Ornstein-Uhlenbeck) over ``dt`` seconds."""
    return value - value * min(1.0, dt / tau) + 2.45 * sigma * math.sqrt(dt) * _noise(rng)


def _disk(rng: random.Random, name: str, bps: float, io_size: int) -> Json:
    burst = 8.0 if rng.random() < 0.02 else 1.0
    read = bps * burst * (0.5 + rng.random())
    write = bps * burst * (0.3 + rng.random())
    return {"name": name, "read_bps": read, "write_bps": write,
            "read_ops": read / io_size, "write_ops": write / io_size}


def _total(disks: list[Json]) -> Json:
    keys = ("read_bps", "write_bps", "read_ops", "write_ops")
    return {"name": "total", **{k: sum(d[k] for d in disks) for k in keys}}


def _nic(rng: random.Random, name: str, bps: float, tx_ratio: float, packet: float,
         error_rate: float) -> Json:
    rx = bps * (0.5 + rng.random())
    tx = rx * tx_ratio * (0.8 + 0.4 * rng.random())
    errs = rng.randint(1, 5) if rng.random() < error_rate else 0
    drops = rng.randint(1, 20) if rng.random() < error_rate * 2 else 0
    return {"name": name, "rx_bps": rx, "tx_bps": tx, "rx_pps": rx / packet,
            "tx_pps": tx / packet, "rx_errs": errs, "tx_errs": 0, "rx_drops": drops,
            "tx_drops": 0}


def _fs(mount: str, device: str, fstype: str, total: int, pct: float) -> FsUsage:
    return FsUsage(mount=mount, device=device, fstype=fstype, total_bytes=total,
                   used_bytes=int(total * pct / 100), used_pct=pct)
