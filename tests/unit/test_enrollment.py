"""Enrollment without a server: tokens, default server ids, the request body, the agent's side
(what it reports, the files it writes, which identity it runs under)."""

from __future__ import annotations

import json
import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from agent import enroll as agent_enroll
from agent.enroll import (
    EnrollError,
    apply_enrollment,
    describe_os,
    enroll,
    load_enrollment,
    plain_http_risk,
    write_atomic,
)
from agent.ops import HANDLERS
from agent.settings import AgentSettings
from connectors.keystore import key_id, public_pem
from ui.alerts_api import field_problem
from ui.auth import digest
from ui.enroll_api import EnrollBody
from ui.enrollment import ENROLL_PREFIX, default_server_id, new_enrollment, split_enrollment

KEY = Ed25519PrivateKey.generate().public_key()
PEM = public_pem(KEY)


# --- tokens and ids ------------------------------------------------------------------------

def test_a_new_token_keeps_only_the_hash_of_its_secret() -> None:
    text, record = new_enrollment("acme", "ann", timedelta(minutes=30))
    assert text.startswith(ENROLL_PREFIX)
    token_id, secret = text[len(ENROLL_PREFIX):].split("_", 1)
    assert record.id == token_id and record.tenant == "acme" and record.created_by == "ann"
    assert record.secret_hash == digest(secret) and secret not in repr(record)
    assert record.used_at is None and record.server_id is None
    assert record.expires_at - record.created_at == timedelta(minutes=30)
    assert split_enrollment(text) == (token_id, digest(secret))
    _, default = new_enrollment("acme", "ann")
    assert default.expires_at - default.created_at == timedelta(hours=1)


@pytest.mark.parametrize("text", ["", "fde_", "fde_abc", "fde__secret", "fde_abc_",
                                  "fdt_abc_secret", "fde_" + "a" * 65 + "_s",
                                  "fde_abc_" + "s" * 300])
def test_malformed_tokens_are_refused_before_any_lookup(text: str) -> None:
    assert split_enrollment(text) is None


@pytest.mark.parametrize(("hostname", "expected"), [
    ("web-1.example.com", "web-1"), ("DB_2", "DB_2"), ("web 1", "web-1"),
    ("-odd-", "odd"), ("ünï", "n"), ("ü", None), ("...", None), ("a" * 300, "a" * 128)])
def test_the_default_server_id_is_the_first_label_of_the_host_name(
        hostname: str, expected: str | None) -> None:
    assert default_server_id(hostname) == expected


# --- the request body ----------------------------------------------------------------------

BODY: dict[str, Any] = {"token": "fde_a_b", "hostname": "web-1", "agent_version": "0.1.0",
                        "os": "Debian GNU/Linux 12; Linux 6.1 x86_64", "capabilities": ["PING"]}


def test_a_good_body_parses() -> None:
    body = EnrollBody.model_validate(BODY)
    assert body.server_id is None and body.capabilities == ["PING"]


@pytest.mark.parametrize(("change", "field"), [
    ({"surprise": 1}, "surprise"),
    ({"server_id": "no spaces"}, "server_id"),
    ({"server_id": "x" * 129}, "server_id"),
    ({"hostname": ""}, "hostname"),
    ({"hostname": "a" * 256}, "hostname"),
    ({"hostname": "web\n1"}, "hostname"),
    ({"agent_version": "1" * 65}, "agent_version"),
    ({"os": "Linux\x1b[31m"}, "os"),
    ({"capabilities": ["PING", "no spaces"]}, "capabilities.1"),
    ({"capabilities": ["X"] * 129}, "capabilities"),
    ({"token": "t" * 201}, "token"),
    ({"token": None}, "token"),
])
def test_a_bad_body_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EnrollBody.model_validate({**BODY, **change})
    assert field_problem(caught.value)[0] == field


def test_every_field_but_server_id_and_capabilities_is_required() -> None:
    for name in ("token", "hostname", "agent_version", "os"):
        with pytest.raises(ValidationError) as caught:
            EnrollBody.model_validate({k: v for k, v in BODY.items() if k != name})
        assert field_problem(caught.value)[0] == name


# --- what the agent reports ----------------------------------------------------------------

def test_the_os_description_names_the_distribution_and_the_kernel() -> None:
    release = {"NAME": "Debian GNU/Linux", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}
    assert describe_os(release, ("Linux", "6.1.0-18-amd64", "x86_64")) == \
        "Debian GNU/Linux 12 (bookworm); Linux 6.1.0-18-amd64 x86_64"
    assert describe_os({}, ("Linux", "6.1", "")) == "Linux 6.1"
    assert describe_os({}, ("", "", "")) == "unknown"
    long = describe_os({"PRETTY_NAME": "x\x1b" * 200}, ("Linux", "6.1", "x86_64"))
    assert len(long) == 128 and "\x1b" not in long
    assert describe_os()  # this machine


def test_the_request_reports_version_os_and_the_handler_types() -> None:
    body = agent_enroll.request_body("fde_a_b", "web-1", None)
    assert body["capabilities"] == sorted(HANDLERS) and "PING" in body["capabilities"]
    assert body["agent_version"] and body["os"] and "server_id" not in body
    EnrollBody.model_validate(body)  # what the agent sends, the control plane accepts
    assert agent_enroll.request_body("fde_a_b", "web-1", "srv-9")["server_id"] == "srv-9"


def test_plain_http_is_flagged_unless_it_is_loopback() -> None:
    assert plain_http_risk("http://fleet.example.com")
    assert not plain_http_risk("http://127.0.0.1:8000")
    assert not plain_http_risk("http://localhost:8000/")
    assert not plain_http_risk("https://fleet.example.com")


# --- the agent's files -----------------------------------------------------------------------

def answering(status: int, data: Any, seen: list[dict[str, Any]] | None = None) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(json.loads(request.content))
        assert request.url.path == "/api/v1/agents/enroll"
        return httpx.Response(status, json=data)

    return httpx.Client(transport=httpx.MockTransport(handle))


GOOD = {"server_id": "web-1", "tenant": "acme", "control_key_pem": PEM, "key_id": key_id(KEY)}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_enrolling_pins_the_key_and_keeps_the_enrollment(tmp_path: Path) -> None:
    settings = AgentSettings(state_dir=tmp_path / "state", hostname="web-1.example.com")
    seen: list[dict[str, Any]] = []
    done = enroll("http://cp:8000/", "fde_a_b", settings, client=answering(200, GOOD, seen))
    assert (done.server_id, done.tenant, done.url) == ("web-1", "acme", "http://cp:8000")
    assert seen[0]["token"] == "fde_a_b" and seen[0]["hostname"] == "web-1.example.com"
    pin, kept = tmp_path / "state/control.pub", tmp_path / "state/enrollment.json"
    assert pin.read_text() == PEM and mode(pin) == 0o644
    assert mode(kept) == 0o600 and json.loads(kept.read_text())["key_id"] == key_id(KEY)
    assert settings.control_key_file() == pin
    assert sorted(p.name for p in pin.parent.iterdir()) == ["control.pub", "enrollment.json"]


def test_an_existing_pin_is_replaced_only_with_force(tmp_path: Path) -> None:
    settings = AgentSettings(state_dir=tmp_path)
    (tmp_path / "control.pub").write_text("old pin")
    with pytest.raises(EnrollError, match="--force"):
        enroll("http://cp", "fde_a_b", settings, client=answering(200, GOOD))
    assert (tmp_path / "control.pub").read_text() == "old pin"
    enroll("http://cp", "fde_a_b", settings, force=True, client=answering(200, GOOD))
    assert (tmp_path / "control.pub").read_text() == PEM


def test_an_explicit_server_id_setting_is_sent(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETDECK_AGENT_SERVER_ID", "from-env")
    seen: list[dict[str, Any]] = []
    enroll("http://cp", "fde_a_b", AgentSettings(state_dir=tmp_path),
           client=answering(200, GOOD, seen))
    assert seen[0]["server_id"] == "from-env"


@pytest.mark.parametrize(("status", "data", "words"), [
    (401, {"error": {"code": "unauthenticated", "message": "the token is not valid"}},
     "(401): the token is not valid"),
    (200, {**GOOD, "key_id": "0" * 16}, "does not match the key id"),
    (200, {**GOOD, "control_key_pem": "nope"}, "not usable"),
    (200, {**GOOD, "tenant": "bad tenant"}, "not usable"),
    (200, [1, 2], "not a JSON object"),
])
def test_a_refused_or_unusable_answer_writes_nothing(tmp_path: Path, status: int, data: Any,
                                                     words: str) -> None:
    with pytest.raises(EnrollError) as caught:
        enroll("http://cp", "fde_a_b", AgentSettings(state_dir=tmp_path),
               client=answering(status, data))
    assert words in str(caught.value) and "fde_a_b" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_control_plane_is_one_clear_error(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    with pytest.raises(EnrollError, match="cannot reach the control plane"):
        enroll("http://cp", "fde_a_b", AgentSettings(state_dir=tmp_path), client=client)
    with pytest.raises(EnrollError, match="not an http"):
        enroll("ftp://cp", "fde_a_b", AgentSettings(state_dir=tmp_path), client=client)


def test_an_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_atomic(path, "one", 0o600)
    write_atomic(path, "two", 0o644)
    assert path.read_text() == "two" and mode(path) == 0o644
    assert os.listdir(tmp_path) == ["f"]


# --- running as the enrolled server ----------------------------------------------------------

def enrolled(state: Path) -> None:
    write_atomic(state / "enrollment.json", json.dumps(
        {"server_id": "web-1", "tenant": "acme", "url": "http://cp", "key_id": "k"}), 0o600)


def test_the_agent_runs_as_the_enrolled_server(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETDECK_AGENT_SERVER_ID", raising=False)
    monkeypatch.delenv("FLEETDECK_AGENT_TENANT", raising=False)
    settings = AgentSettings(state_dir=tmp_path)
    assert apply_enrollment(settings) is settings  # not enrolled
    enrolled(tmp_path)
    applied = apply_enrollment(AgentSettings(state_dir=tmp_path))
    assert (applied.server_id, applied.tenant) == ("web-1", "acme")


def test_explicit_settings_win_over_the_enrollment(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    enrolled(tmp_path)
    monkeypatch.setenv("FLEETDECK_AGENT_TENANT", "other")
    monkeypatch.delenv("FLEETDECK_AGENT_SERVER_ID", raising=False)
    applied = apply_enrollment(AgentSettings(state_dir=tmp_path))
    assert (applied.server_id, applied.tenant) == ("web-1", "other")
    assert "enrolled as 'acme'" in caplog.text


def test_an_unreadable_enrollment_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "enrollment.json").write_text("{not json")
    assert load_enrollment(tmp_path) is None
    (tmp_path / "enrollment.json").write_text('{"server_id": "bad id"}')
    assert load_enrollment(tmp_path) is None
    assert load_enrollment(tmp_path / "missing") is None

