"""Enrolling this agent with the control plane, and using the enrollment when it runs.

``fleetdeck agent enroll --url URL --token fde_…`` sends the one-time token with what this
agent is (host name, version, OS, the command types of :data:`agent.ops.HANDLERS`) and
stores what comes back in ``state_dir``:

- ``control.pub`` (0644): the control plane's Ed25519 public key, pinned; the agent accepts
  only commands signed with it (:meth:`AgentSettings.control_key_file`).
- ``enrollment.json`` (0600): server id, tenant, URL and key id.

Both are written atomically (a temporary file, fsync'd, then renamed). An existing pin is
not replaced unless asked (``force``): a new key is exactly what an attacker would hand out.

When the agent runs, the enrolled server id and tenant are used unless
``FLEETDECK_AGENT_SERVER_ID`` / ``FLEETDECK_AGENT_TENANT`` are set explicitly: an operator's
explicit setting wins (e.g. to run a second agent from the same state directory), and a
mismatch with the enrollment is logged, since the control plane signs commands for the
enrolled identity and the agent would refuse them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.settings import AgentSettings
from schemas.envelope import ID_PATTERN

if TYPE_CHECKING:  # httpx is imported only to enroll, not when the agent runs
    import httpx

log = logging.getLogger(__name__)

PIN_FILE = "control.pub"
ENROLLMENT_FILE = "enrollment.json"
ENROLL_PATH = "/api/v1/agents/enroll"
TIMEOUT_S = 15.0


class EnrollError(Exception):
    """Enrollment failed; the message says why and what to do."""


class Enrollment(BaseModel):
    """What ``enrollment.json`` holds."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    server_id: str = Field(pattern=ID_PATTERN)
    tenant: str = Field(pattern=ID_PATTERN)
    url: str
    key_id: str = Field(max_length=64)


# --- what the agent says about itself ----------------------------------------------------

def agent_version() -> str:
    try:
        return metadata.version("fleetdeck")
    except metadata.PackageNotFoundError:
        return "unknown"


def describe_os(release: dict[str, str] | None = None, uname: tuple[str, str, str] | None = None
                ) -> str:
    """E.g. ``Debian GNU/Linux 12 (bookworm); Linux 6.1.0-18-amd64 x86_64`` (≤ 128 chars)."""
    if release is None:
        try:
            release = platform.freedesktop_os_release()
        except OSError:
            release = {}
    system, kernel, machine = uname or (platform.system(), platform.release(),
                                        platform.machine())
    kernel_text = " ".join(part for part in (system, kernel, machine) if part)
    name = release.get("PRETTY_NAME") or release.get("NAME") or ""
    text = f"{name}; {kernel_text}" if name and kernel_text else name or kernel_text
    printable = "".join(c for c in text if c.isprintable())
    return printable[:128] or "unknown"


def capabilities() -> list[str]:
    """The command types this agent has a handler for."""
    from agent.ops import HANDLERS

    return sorted(HANDLERS)


def request_body(token: str, hostname: str, server_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"token": token, "hostname": hostname,
                            "agent_version": agent_version(), "os": describe_os(),
                            "capabilities": capabilities()}
    if server_id is not None:
        body["server_id"] = server_id
    return body


# --- enrolling ----------------------------------------------------------------------------

def enroll(url: str, token: str, settings: AgentSettings, *, server_id: str | None = None,
           force: bool = False, client: httpx.Client | None = None) -> Enrollment:
    """Enroll with the control plane at ``url`` and store the pin and the enrollment."""
    state = settings.state_dir
    if (state / PIN_FILE).exists() and not force:
        raise EnrollError(f"{state / PIN_FILE} exists: this agent is enrolled already "
                          "(use --force to enroll again and replace the pinned key)")
    base = url.rstrip("/")
    if urlparse(base).scheme not in ("http", "https"):
        raise EnrollError(f"{url!r} is not an http:// or https:// URL")
    if server_id is None and "server_id" in settings.model_fields_set:
        server_id = settings.server_id  # FLEETDECK_AGENT_SERVER_ID
    answer = _post(base + ENROLL_PATH, request_body(token, settings.hostname, server_id),
                   client)
    enrollment, pem = _read_answer(answer, base)
    write_atomic(state / ENROLLMENT_FILE, enrollment.model_dump_json(indent=2) + "\n", 0o600)
    write_atomic(state / PIN_FILE, pem, 0o644)
    return enrollment


def plain_http_risk(url: str) -> bool:
    """Whether the key would come over plain HTTP from another machine (anyone on the path
    could hand out their own key); loopback addresses are fine."""
    parsed = urlparse(url)
    return parsed.scheme == "http" and parsed.hostname not in ("127.0.0.1", "::1", "localhost")


def _post(url: str, body: dict[str, Any], client: httpx.Client | None) -> httpx.Response:
    import httpx

    try:
        if client is not None:
            return client.post(url, json=body)
        with httpx.Client(timeout=TIMEOUT_S) as own:
            return own.post(url, json=body)
    except httpx.HTTPError as exc:
        raise EnrollError(f"cannot reach the control plane at {url}: {exc}") from None


def _read_answer(answer: httpx.Response, base: str) -> tuple[Enrollment, str]:
    try:
        data = answer.json()
    except ValueError:
        data = None
    if answer.status_code != 200:
        message = (data or {}).get("error", {}).get("message") if isinstance(data, dict) \
            else None
        raise EnrollError(f"the control plane refused the enrollment ({answer.status_code}): "
                          f"{message or answer.text[:200]}")
    if not isinstance(data, dict):
        raise EnrollError("the control plane's answer is not a JSON object")
    from connectors.keystore import KeyStoreError, key_id, load_public

    pem = str(data.get("control_key_pem", ""))
    try:
        enrollment = Enrollment(server_id=data.get("server_id"), tenant=data.get("tenant"),
                                url=base, key_id=data.get("key_id"))
        public = load_public(pem)
    except (ValidationError, KeyStoreError) as exc:
        raise EnrollError(f"the control plane's answer is not usable: {exc}") from None
    if key_id(public) != enrollment.key_id:
        raise EnrollError("the control plane's key does not match the key id it sent")
    return enrollment, pem


def write_atomic(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` with ``text`` in one step (readers see the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --- running as the enrolled server -------------------------------------------------------

def load_enrollment(state_dir: Path) -> Enrollment | None:
    """The stored enrollment; None when there is none (an unreadable one is logged)."""
    path = state_dir / ENROLLMENT_FILE
    try:
        return Enrollment.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("ignoring the enrollment %s: %s", path, exc)
        return None


def apply_enrollment(settings: AgentSettings) -> AgentSettings:
    """``settings`` with the enrolled server id and tenant, except where they were set
    explicitly (those win; a mismatch is logged)."""
    enrollment = load_enrollment(settings.state_dir)
    if enrollment is None:
        return settings
    enrolled = {"server_id": enrollment.server_id, "tenant": enrollment.tenant}
    update = {}
    for name, value in enrolled.items():
        if name not in settings.model_fields_set:
            update[name] = value
        elif getattr(settings, name) != value:
            log.warning("%s is set to %r but the agent is enrolled as %r; commands for this "
                        "server will be refused", name, getattr(settings, name), value)
    return settings.model_copy(update=update)
