import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import CHANNELS, MetricSample, channels, points, value_of
from schemas.export import export
from tests.factories import sample

KNOWN_UNITS = {"", "%", "B", "B/s", "ops/s", "packets/s", "errors/s", "drops/s"}


def test_every_channel_has_a_known_unit_and_a_description() -> None:
    for channel in CHANNELS.values():
        assert channel.description, channel.name
        assert channel.unit in KNOWN_UNITS, channel.name
        assert channel.metric.startswith("fd_") and "." not in channel.metric


def test_points_cover_totals_and_items() -> None:
    names = {(c.name, tuple(c.labels(item))) for c, item, _ in points(sample(fs_pct=10.0))}
    assert ("cpu.total", ()) in names and ("cpu.core", ("core",)) in names
    assert ("fs.used_pct", ("mount",)) in names and ("net.rx_bps", ()) in names


def test_totals_and_value_of() -> None:
    s = sample(cpu=42.0, fs_pct=10.0)
    totals = {c.name: v for c, v in channels.totals(s)}
    assert totals["cpu.total"] == 42.0 and "fs.used_pct" not in totals and "cpu.core" not in totals
    assert value_of(s, "cpu.total") == 42.0 and value_of(s, "fs.used_pct") is None


def test_timestamps_must_have_a_timezone() -> None:
    data = sample().model_dump(mode="json") | {"ts": "2026-01-01T00:00:00"}
    with pytest.raises(ValidationError, match="timezone"):
        MetricSample.model_validate(data)


def test_export_writes_valid_json_schema_with_units(tmp_path: Path) -> None:
    files = export(tmp_path)
    names = {f.name for f in files}
    assert names == {f"{m}.schema.json" for m in (
        "MetricSample", "HealthChange", "DeadLetter", "AlertEvent", "AlertAction",
        "SignedCommand", "Command", "CommandEvent", "AuditEvent")}
    command = json.loads((tmp_path / "Command.schema.json").read_text())
    params = {json.dumps(v) for v in command["$defs"].values()}
    assert any('"FILE_MOVE"' in p and "overwrite" in p for p in params)
    assert any('"CRON_CREATE"' in p for p in params)
    doc = json.loads((tmp_path / "MetricSample.schema.json").read_text())
    assert doc["x-topic"] == "fd.metrics"
    assert doc["$defs"]["CpuStats"]["properties"]["total"]["unit"] == "%"


@pytest.mark.parametrize("text, ok", [
    ("ok\tfine\nnext line", True), ("héllo wörld 日本 🙂", True),
    ("a\u202eb", False), ("a\u200bb", False), ("a\u2028b", False),
    ("a\x1b[2J", False), ("a\x00", False), ("a\rb", False), ("a\x85b", False)])
def test_audit_text_refuses_what_hides_or_reorders_it(text: str, ok: bool) -> None:
    from pydantic import TypeAdapter

    from schemas.envelope import AuditText

    adapter = TypeAdapter(AuditText)
    if ok:
        assert adapter.validate_python(text) == text
    else:
        with pytest.raises(ValidationError, match="control characters"):
            adapter.validate_python(text)
