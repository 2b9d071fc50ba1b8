"""Settings of the agent (``FLEETDECK_AGENT_`` environment variables)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.kafka import KafkaSettings
from schemas import ID_PATTERN
from schemas.files import MAX_CHUNK_BYTES

#: MIME types the file manager never reads or writes by default: native executables
DEFAULT_MIME_DENY = ("application/x-executable", "application/x-sharedlib",
                     "application/x-pie-executable", "application/x-mach-binary",
                     "application/x-dosexec")


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETDECK_AGENT_", env_nested_delimiter="__",
                                      extra="ignore")

    server_id: str = Field(default_factory=lambda: socket.gethostname().split(".")[0] or "local",
                           pattern=ID_PATTERN)
    tenant: str = Field("default", pattern=ID_PATTERN)
    hostname: str = Field(default_factory=socket.gethostname)
    interval_s: float = Field(1.0, ge=0.1, le=3600, description="Sampling interval (s)")
    watch: list[str] = Field(default_factory=list, description="Process names to watch")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    spool_per_server: int = Field(900, ge=10, description="Samples buffered per server while "
                                  "the broker is unreachable (900 = 15 min at 1 Hz)")
    state_dir: Path = Field(Path(".fleetdeck/agent"), description="Where the agent keeps the "
                            "ids of commands it accepted, large results and its enrollment")
    control_key: Path | None = Field(None, description="PEM file of the control plane's "
                                     "Ed25519 public key; without one the agent takes no "
                                     "commands (enrollment writes state_dir/control.pub)")
    commands_fetch_wait_ms: int = Field(20, ge=1, le=5000, description="Longest a command "
                                        "fetch waits (the embedded broker always waits this "
                                        "long, so it bounds the ACK latency)")
    # cron manager (agent/ops/cron.py)
    cron_dir: Path = Field(Path("/etc/cron.d"), description="Where FleetDeck writes its cron "
                           "files (one per entry, fleetdeck-<id>) and lists every entry")
    cron_tabs: list[Path] = Field(default_factory=lambda: [Path("/etc/crontab")],
                                  description="System crontabs listed (read only) besides "
                                  "cron_dir")
    cron_spool_dir: Path | None = Field(Path("/var/spool/cron/crontabs"), description="Users' "
                                        "crontabs, listed read only (None: not listed)")
    cron_timezone: str | None = Field(None, description="IANA zone of the fire-time previews "
                                      "(None: the server's, from /etc/localtime)")
    cron_user: str = Field("nobody", pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
                           description="Unprivileged user entries run as by default")
    cron_users: list[str] = Field(default_factory=list, description="Other users entries "
                                  "may run as (never root unless cron_allow_root)")
    cron_allow_root: bool = Field(False, description="Whether entries may run as root")
    cron_path_roots: list[Path] = Field(
        default_factory=lambda: [Path("/srv"), Path("/var/www"), Path("/var/backups")],
        description="Directories the backup-dir template may read from and write to")
    cron_logrotate_dir: Path = Field(Path("/etc/logrotate.d"), description="Where the "
                                     "logrotate template's configuration files must be")
    cron_script_dir: Path = Field(Path("/usr/local/lib/fleetdeck/cron"), description="The only "
                                  "directory the script template runs scripts from")
    cron_freeform_tenants: list[str] = Field(default_factory=list, description="Tenants whose "
                                             "approved commands may carry free-form cron "
                                             "commands (off for all by default)")

    # file manager (agent/ops/files.py)
    file_roots: list[Path] = Field(default_factory=list, description="Sandbox roots (absolute "
                                   "directories) the file manager works under; empty: the "
                                   "file manager is off")
    file_tenant_roots: dict[str, list[Path]] = Field(
        default_factory=dict, description="Sandbox roots per tenant (tenant id -> absolute "
        "directories), replacing file_roots for that tenant's commands: the tenant's file "
        "policy on an agent that serves several tenants; an empty list turns the file manager "
        "off for that tenant")
    file_max_read_bytes: int = Field(1024 * 1024, ge=1, le=64 * 1024 * 1024,
                                     description="Most bytes one FILE_READ returns")
    file_max_write_bytes: int = Field(MAX_CHUNK_BYTES, ge=0, le=MAX_CHUNK_BYTES,
                                      description="Largest file one FILE_WRITE writes")
    file_max_upload_bytes: int = Field(512 * 1024 * 1024, ge=0, le=1 << 40,
                                       description="Largest file an upload builds")
    file_mime_allow: list[str] = Field(default_factory=list, description="MIME types (globs "
                                       "such as text/*) that may be read and written, detected "
                                       "from the content; empty: every type not denied")
    file_mime_deny: list[str] = Field(default_factory=lambda: list(DEFAULT_MIME_DENY),
                                      description="MIME types (globs) never read or written, "
                                      "detected from the content; wins over file_mime_allow")
    file_denylist: list[str] = Field(default_factory=list, description="Extra paths (globs) "
                                     "refused inside every root, besides the built-in system "
                                     "paths; a glob without '/' matches any path component")

    @field_validator("file_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[Path]) -> list[Path]:
        relative = [str(root) for root in roots if not root.is_absolute()]
        if relative:
            raise ValueError(f"file roots must be absolute paths: {', '.join(relative)}")
        return roots

    @field_validator("file_tenant_roots")
    @classmethod
    def _absolute_tenant_roots(cls, roots: dict[str, list[Path]]) -> dict[str, list[Path]]:
        for tenant_roots in roots.values():
            cls._absolute_roots(tenant_roots)
        return roots

    def file_roots_for(self, tenant: str | None) -> list[Path]:
        """The sandbox roots of ``tenant``'s commands (its own policy, else file_roots)."""
        if tenant is not None and tenant in self.file_tenant_roots:
            return self.file_tenant_roots[tenant]
        return self.file_roots

    def control_key_file(self) -> Path | None:
        """The pinned key: the configured file, else the one enrollment stored."""
        if self.control_key is not None:
            return self.control_key
        pinned = self.state_dir / "control.pub"
        return pinned if pinned.exists() else None
