"""Child processes of the embedded stack: start, wait until ready, stop in order."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A part of the embedded stack could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pick_port(host: str, wanted: int) -> int:
    """``wanted`` when it is free, else any free port."""
    if wanted and not port_open(host, wanted):
        return wanted
    return free_port(host)


@dataclass
class Service:
    name: str
    argv: list[str]
    ready: Callable[[], bool]
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    nice: int = 0  # > 0: bulk work that must yield the CPU to the latency-sensitive path
    #: run once a restarted service is ready, before the services after it are restarted
    #: (the broker comes back empty: its topics are created before any client can make the
    #: broker auto-create them with its default partition count)
    after_restart: Callable[[], None] | None = None

    @property
    def status(self) -> str:
        if self.proc is None:
            return "not started"
        code = self.proc.poll()
        return "running" if code is None else f"exited ({code})"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid


class Supervisor:
    """Starts services in order and stops exactly those, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.services: list[Service] = []

    def start(self, service: Service, timeout: float = 60.0) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        service.log_path = self.log_dir / f"{service.name}.log"
        self._spawn(service)
        self.services.append(service)
        self._wait_ready(service, timeout)
        log.info("%s ready (pid %s)", service.name, service.pid)
        return service

    def _wait_ready(self, service: Service, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not service.ready():
            if service.proc is not None and service.proc.poll() is not None:
                raise StackError(f"{service.name} exited with {service.proc.returncode}; "
                                 f"see {service.log_path}:\n{_tail(service.log_path)}")
            if time.monotonic() > deadline:
                raise StackError(f"{service.name} not ready after {timeout:.0f}s; "
                                 f"see {service.log_path}:\n{_tail(service.log_path)}")
            time.sleep(0.1)

    def _spawn(self, service: Service) -> None:
        assert service.log_path is not None
        out = service.log_path.open("ab")
        try:
            service.proc = subprocess.Popen(
                service.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **service.env}, start_new_session=True,
                preexec_fn=functools.partial(prepare_child, service.nice))
        except OSError as exc:
            raise StackError(f"cannot start {service.name} ({service.argv[0]}): {exc}") from exc
        finally:
            out.close()

    def restart_exited(self, max_restarts: int = 5) -> list[Service]:
        """Start again every service that exited (used by ``fleetdeck up``); one that
        keeps failing is given up after ``max_restarts`` restarts (see its log)."""
        again = []
        for service in self.services:
            if service.restarts >= max_restarts:
                continue
            if service.proc is not None and service.proc.poll() is not None:
                log.warning("%s exited with %s; restarting", service.name, service.proc.returncode)
                service.restarts += 1
                self._spawn(service)
                again.append(service)
                if service.after_restart is not None:
                    try:
                        self._wait_ready(service, 30.0)
                        service.after_restart()
                    except Exception as exc:  # the next round restarts it again if it died
                        log.error("%s restarted but not set up: %s", service.name, exc)
        return again

    def stop(self, service: Service, grace: float = 10.0) -> None:
        proc = service.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        for service in reversed(self.services):
            self.stop(service)
        self.services.clear()


def prepare_child(nice: int) -> None:
    """In the child, before exec: get SIGTERM when the supervisor dies, even by SIGKILL
    (Linux prctl PR_SET_PDEATHSIG), so no process outlives the stack that started it;
    lower the priority of bulk services (storage) so the live path keeps its latency."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
