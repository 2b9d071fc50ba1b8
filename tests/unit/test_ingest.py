import orjson
import pytest

from schemas import DeadLetter, MetricSample
from streams.ingest.logic import decode_sample
from tests.factories import sample

GOOD = sample().model_dump_json().encode()


def decode(raw: bytes | None, max_bytes: int = 10_000) -> MetricSample | DeadLetter:
    return decode_sample(raw, topic="fd.metrics", key=b"k", max_bytes=max_bytes)


def test_valid_sample_decodes() -> None:
    assert isinstance(decode(GOOD), MetricSample)


def test_unknown_fields_are_tolerated_in_telemetry() -> None:
    data = orjson.loads(GOOD) | {"future_field": 1}
    assert isinstance(decode(orjson.dumps(data)), MetricSample)


@pytest.mark.parametrize(("raw", "reason", "detail"), [
    (b"{not json", "undecodable", "not JSON"),
    (b"[1, 2]", "undecodable", "expected a JSON object"),
    (None, "undecodable", "not JSON"),
    (b"\xff\xfe", "undecodable", "not JSON"),
    (orjson.dumps(orjson.loads(GOOD) | {"schema_version": 2}), "wrong_version",
     "schema_version 2"),
    (orjson.dumps(orjson.loads(GOOD) | {"server_id": "../etc"}), "invalid", "server_id"),
    (orjson.dumps({k: v for k, v in orjson.loads(GOOD).items() if k != "cpu"}), "invalid",
     "cpu: Field required"),
    (orjson.dumps(orjson.loads(GOOD) | {"ts": "2026-01-01T00:00:00"}), "invalid", "timezone"),
])
def test_bad_messages_become_dead_letters(raw: bytes | None, reason: str, detail: str) -> None:
    letter = decode(raw)
    assert isinstance(letter, DeadLetter)
    assert letter.reason == reason
    assert detail in letter.detail
    assert letter.source_topic == "fd.metrics" and letter.key == "k"


def test_oversized_is_rejected_before_parsing() -> None:
    letter = decode(GOOD, max_bytes=100)
    assert isinstance(letter, DeadLetter) and letter.reason == "oversized"
    assert letter.size == len(GOOD) and len(letter.payload_preview) <= 2048


def test_full_sample_is_the_validated_model_with_health() -> None:
    from streams.live.logic import full_sample

    sent = orjson.loads(GOOD) | {"seq": "7", "__proto__": {"x": 1}}
    item = decode(orjson.dumps(sent))
    assert isinstance(item, MetricSample)
    data = orjson.loads(full_sample(item, "CRITICAL"))
    assert data["health"] == "CRITICAL" and data["seq"] == 7 and "__proto__" not in data


def test_item_lists_are_bounded() -> None:
    huge = orjson.loads(GOOD) | {"cpu": {"total": 1, "per_core": [1.0] * 2000}}
    letter = decode(orjson.dumps(huge), max_bytes=1_000_000)
    assert isinstance(letter, DeadLetter) and "per_core" in letter.detail


@pytest.mark.parametrize("bad", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_rejected(bad: bytes) -> None:
    raw = GOOD.replace(b'"load1":0.0', b'"load1":' + bad)
    assert raw != GOOD
    letter = decode(raw)
    assert isinstance(letter, DeadLetter) and letter.reason in {"invalid", "undecodable"}


def test_samples_from_the_future_are_rejected() -> None:
    from datetime import UTC, datetime, timedelta

    future = sample(ts=datetime.now(UTC) + timedelta(hours=2)).model_dump_json().encode()
    letter = decode(future)
    assert isinstance(letter, DeadLetter) and "in the future" in letter.detail
    near = sample(ts=datetime.now(UTC) + timedelta(seconds=30)).model_dump_json().encode()
    assert isinstance(decode(near), MetricSample)


def test_a_late_sample_goes_to_its_server_stream_only() -> None:
    from connectors.redis_live import RedisSettings
    from schemas.topics import RedisKeys
    from streams.live.logic import late_sample_event

    keys = RedisKeys("t:")
    item = sample("srv-9", cpu=42.0)
    event = late_sample_event(item, "WARNING", keys, RedisSettings())
    assert event.key == keys.server_stream("srv-9") != keys.fleet_stream
    assert event.event == "sample"
    body = orjson.loads(event.data)
    assert body["server_id"] == "srv-9" and body["health"] == "WARNING"
    assert body["cpu"]["total"] == 42.0
