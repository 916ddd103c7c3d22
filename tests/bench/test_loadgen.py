"""The benchmark's pure functions: percentiles, summaries, the ratio table."""

from __future__ import annotations

import math

import pytest
from berth_bench import loadgen, report

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("values", "q", "want"),
    [
        ([], 50, math.nan),  # no samples: NaN, not an exception
        ([7.0], 99, 7.0),  # one sample is every percentile
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),  # interpolates between the middle two
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),  # the top is the max
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),  # the bottom is the min
        ([float(i) for i in range(1, 101)], 99, 99.01),  # numpy's linear method
    ],
)
def test_percentile(values: list[float], q: float, want: float) -> None:
    got = loadgen.percentile(values, q)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="within"):
        loadgen.percentile([1.0], 101)


def test_summarize_counts_errors_and_rate() -> None:
    res = loadgen.summarize([10.0, 20.0, 30.0], {"status_500": 1}, concurrency=2, duration_s=2.0)
    assert (res.requests, res.errors, res.rps, res.p50_ms, res.max_ms) == (4, 1, 1.5, 20.0, 30.0)
    assert res.error_rate == 0.25


def test_build_request_sets_length_and_keepalive() -> None:
    host, port, raw = loadgen.build_request(
        "http://127.0.0.1:8080/v2/x?y=1", body=b"abc", headers={"Content-Type": "application/json"}
    )
    assert (host, port) == ("127.0.0.1", 8080)
    assert raw.startswith(b"POST /v2/x?y=1 HTTP/1.1\r\n")
    assert b"Content-Length: 3\r\n" in raw and b"Connection: keep-alive" in raw
    assert raw.endswith(b"\r\n\r\nabc")


def _row(
    server: str, model: str, rps: float, p99: float, c: int = 32, variant: str = "json"
) -> report.Row:
    return {
        "server": server,
        "variant": variant,
        "label": f"{server} {variant}",
        "model": model,
        "concurrency": c,
        "status": "ok",
        "rps": rps,
        "p99_ms": p99,
        "p50_ms": p99 / 2,
        "error_rate": 0.0,
    }


def test_ratios_and_goals() -> None:
    rows = [
        _row("berth", "cnn", 30.0, 100.0, variant="oip-binary"),
        _row("berth", "cnn", 20.0, 150.0, variant="oip-json"),
        _row("kserve", "cnn", 10.0, 300.0),
        _row("litserve", "cnn", 15.0, 200.0),
        _row("berth", "cnn", 36.0, 900.0, c=128, variant="oip-binary"),
        {
            "server": "rayserve",
            "variant": "json",
            "label": "rayserve",
            "model": "cnn",
            "concurrency": 32,
            "status": "failed",
            "reason": "boom",
        },  # failures are ignored
        _row("berth", "trivial", 800.0, 50.0, variant="oip-json"),
        _row("uvicorn-hello", "trivial", 1000.0, 40.0),
    ]
    table = report.ratios(rows, {"cnn": 40.0}, ["cnn", "trivial"])
    cnn, trivial = table
    assert cnn["best_peer"] == "litserve json"
    assert cnn["berth_over_best_peer"] == pytest.approx(2.0)
    assert cnn["berth_json_over_best_peer"] == pytest.approx(20 / 15)
    assert cnn["p99_not_worse"] is True
    assert (cnn["ceiling_concurrency"], cnn["berth_over_ceiling"]) == (128, pytest.approx(0.9))
    assert trivial["berth_over_uvicorn"] == pytest.approx(0.8)
    met = {g["goal"].split(":")[0] + g["goal"][-8:]: g["met"] for g in report.goals(table)}
    assert all(met.values()), met


def test_nearest_concurrency_prefers_larger_on_tie() -> None:
    rows = [_row("x", "m", 1, 1, c=c) for c in (8, 32, 128)]
    assert report.nearest_concurrency(rows, 32) == 32
    assert report.nearest_concurrency(rows, 80) == 128
    assert report.nearest_concurrency([], 32) is None
