"""``fleetdeck bench agent``: CPU and memory of the real agent sampling this machine at 1 Hz.

CPU is measured in steady state (after a warm-up that excludes start-up imports) from
the process's own accounting in /proc; RSS is the resident set at the end of the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.progress import Progress

from fleetdeck.bench.common import console
from fleetdeck.stack import Endpoints

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run(endpoints: Endpoints, seconds: float, warmup: float = 5.0,
        watch: list[str] | None = None) -> dict[str, Any]:
    args = [sys.executable, "-m", "fleetdeck", "agent", "--interval", "1"]
    for name in watch or []:
        args += ["--watch", name]
    env = {**os.environ, **endpoints.env()}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            raise RuntimeError(f"the agent exited early with {proc.returncode}")
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"agent at 1 Hz for {seconds:.0f} s", total=seconds)
            while (elapsed := time.monotonic() - t0) < seconds:
                time.sleep(min(1.0, seconds - elapsed))
                progress.update(task, completed=time.monotonic() - t0)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        rss_kb, peak_kb = status_kb(proc.pid, "VmRSS"), status_kb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(10)
    return {"bench": "agent", "seconds": seconds, "watch": watch or [],
            "cpu_percent_of_core": (cpu1 - cpu0) / (t1 - t0) * 100,
            "rss_mb": rss_kb / 1024, "rss_peak_mb": peak_kb / 1024}
