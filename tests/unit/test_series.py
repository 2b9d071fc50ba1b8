import math

import orjson
import pytest

from ui import series
from ui.errors import APIError


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("1h", 3600), ("6h", 21600),
                                               ("24h", 86400), ("90s", 90), ("31d", 2678400)])
def test_ranges(text: str, seconds: int) -> None:
    assert series.parse_range(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "-1h", "1y", "30s", "32d", "1h;drop", "\uff11h"])
def test_bad_ranges_name_the_parameter(text: str) -> None:
    with pytest.raises(APIError) as err:
        series.parse_range(text)
    assert err.value.status_code == 400 and "'range'" in str(err.value.detail)


def test_channels_default_dedupe_and_unknown() -> None:
    assert series.parse_channels(None) == series.DEFAULT_CHANNELS
    assert series.parse_channels("cpu.total, cpu.total,mem.used_pct") == ("cpu.total",
                                                                         "mem.used_pct")
    with pytest.raises(APIError, match="unknown channel"):
        series.parse_channels("cpu.total,rm -rf")


def test_step_defaults_to_about_720_points_and_is_bounded() -> None:
    assert series.parse_step(None, 3600) == 5
    assert series.parse_step(None, 900) == 1
    for bad in ("0", "x", "4000"):
        with pytest.raises(APIError, match="'step'"):
            series.parse_step(bad, 3600)


def test_query_quotes_the_server_id() -> None:
    q = series.SeriesQuery("a\"b", "t\\1", ("cpu.total", "mem.used_pct"), 3600, 5, 1000.0)
    assert series.build_query(q) == \
        '{__name__=~"fd_cpu_total|fd_mem_used_pct",server="a\\"b",tenant="t\\\\1"}'


def test_reshape_to_columns_in_requested_order() -> None:
    q = series.SeriesQuery("s1", "t", ("mem.used_pct", "cpu.total"), 3600, 5, 1000.0)
    body = orjson.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "fd_cpu_total", "server": "s1", "tenant": "t"},
         "values": [[1, "1.5"], [2, "2"]]},
        {"metric": {"__name__": "fd_mem_used_pct", "server": "s1", "tenant": "t"},
         "values": [[1, "50"]]},
    ]}})
    out = series.reshape(q, body)
    assert [s["channel"] for s in out["series"]] == ["mem.used_pct", "cpu.total"]
    assert out["series"][1] == {"channel": "cpu.total", "labels": {}, "unit": "%",
                                "timestamps": [1, 2], "values": [1.5, 2.0]}
    assert (out["start"], out["end"], out["step_s"]) == (-2600.0, 1000.0, 5)


def test_values_not_json_numbers_are_parsed_one_by_one() -> None:
    q = series.SeriesQuery("s1", "t", ("cpu.total",), 3600, 5, 1000.0)
    for texts, expected in [(["1e+06", "-2.5", "0"], [1e6, -2.5, 0]),
                            (["1", "NaN"], [1.0, math.nan]),
                            (["+Inf", "-Inf"], [float("inf"), float("-inf")])]:
        body = orjson.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"__name__": "fd_cpu_total", "server": "s1", "tenant": "t"},
             "values": [[i, t] for i, t in enumerate(texts)]}]}})
        [out] = series.reshape(q, body)["series"]
        assert out["timestamps"] == list(range(len(texts)))
        values = out["values"]
        assert len(values) == len(expected)
        for got, want in zip(values, expected, strict=True):
            assert got == want or (math.isnan(got) and math.isnan(want)), texts
