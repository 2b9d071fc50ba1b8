"""The dispatch bench's per-stage figures: each stage is the gap between two of a command's
timestamps, and only commands with every timestamp count."""

from __future__ import annotations

import math

import orjson

from fleetdeck.bench.dispatch import Run, _command_id, _stages

API = "api: created -> command on the log"
AGENT = "agent: command on the log -> ACK on the log"
CONTROL = "control: ACK on the log -> ACK stamped"
STREAM = "stream: ACK stamped -> seen on SSE"


def _command(run: Run, command_id: str, t0: float, *gaps_s: float) -> None:
    """Record a command created at ``t0`` whose later timestamps follow by ``gaps_s``."""
    times = [t0]
    for gap in gaps_s:
        times.append(times[-1] + gap)
    run.created[command_id] = times[0]
    if len(times) > 1:
        run.on_log[command_id] = times[1]
    if len(times) > 2:
        run.ack_on_log[command_id] = times[2]
    if len(times) > 4:
        run.acked_at[command_id] = times[3]
        run.acked_seen[command_id] = times[4]


def test_each_stage_is_the_gap_between_its_two_timestamps() -> None:
    run = Run()
    _command(run, "a", 100.0, 0.010, 0.050, 0.020, 0.030)
    stages = _stages(run, {"a"})
    assert stages[API] == {"p50_ms": 10.0, "p95_ms": 10.0}
    assert stages[AGENT] == {"p50_ms": 50.0, "p95_ms": 50.0}
    assert stages[CONTROL] == {"p50_ms": 20.0, "p95_ms": 20.0}
    assert stages[STREAM] == {"p50_ms": 30.0, "p95_ms": 30.0}


def test_percentiles_over_the_commands_and_incomplete_ones_left_out() -> None:
    run = Run()
    for i in range(20):  # agent stage 1..20 ms
        _command(run, f"c{i}", 10.0 * i, 0.001, 0.001 * (i + 1), 0.001, 0.001)
    _command(run, "no-ack-on-log", 500.0, 0.9)  # its ACK's record was not found
    run.acked_at["no-ack-on-log"] = run.acked_seen["no-ack-on-log"] = 501.0
    stages = _stages(run, set(run.acked_seen))
    assert stages[AGENT]["p50_ms"] == 10.0
    assert stages[AGENT]["p95_ms"] == 19.0
    assert stages[API]["p95_ms"] == 1.0  # not 900: the incomplete command is left out


def test_no_complete_command_gives_no_figures() -> None:
    run = Run()
    _command(run, "a", 1.0, 0.01)
    stages = _stages(run, {"a"})
    assert all(math.isnan(v) for stage in stages.values() for v in stage.values())


def test_command_ids_are_read_from_signed_commands_and_acks_only() -> None:
    signed = orjson.dumps({"command": orjson.dumps({"id": "c1"}).decode(), "signature": "s"})
    assert _command_id(True, signed) == "c1"
    assert _command_id(False, orjson.dumps({"kind": "acked", "command_id": "c1"})) == "c1"
    assert _command_id(False, orjson.dumps({"kind": "running", "command_id": "c1"})) is None
    for junk in (b"not json", b"[]", b'{"command": "{}"}', None, b'"text"'):
        assert _command_id(True, junk) is None
        assert _command_id(False, junk) is None
