"""`berth bench gateway`'s pure parts: the ABBA window order and the per-round summary."""

from __future__ import annotations

import math
from typing import Any

import pytest
from berth_bench import loadgen, report

pytestmark = pytest.mark.unit


def test_abba_alternates_the_order_each_round() -> None:
    # a linear drift of the machine's load then weighs on both targets alike
    assert loadgen.abba(["d", "g"], 3) == [("d", 0), ("g", 0), ("g", 1), ("d", 1), ("d", 2),
                                           ("g", 2)]  # fmt: skip
    assert loadgen.abba(["d", "g"], 0) == []


def _w(label: str, r: int, p50: float, *, rps: float = 100.0, gw_cpu: float = 0.0,
       rt_cpu: float = 0.1, lg_cpu: float = 0.1, errors: int = 0) -> dict[str, Any]:  # fmt: skip
    return {"label": label, "round": r, "p50_ms": p50, "p99_ms": 2 * p50, "rps": rps,
            "requests": 100 + errors, "errors": errors, "duration_s": 1.0,
            "loadgen_cpu_s": lg_cpu, "runtime_cpu_s": rt_cpu, "gateway_cpu_s": gw_cpu}  # fmt: skip


def test_added_latency_is_the_median_of_per_round_differences() -> None:
    # round 1 ran while the machine was busy: both paths slowed by 10 ms. A difference of
    # medians would mix rounds; the per-round differences are 0.5, 0.5 and 0.8 ms.
    windows = [
        _w("direct", 0, 1.0), _w("gateway", 0, 1.5, gw_cpu=0.04),
        _w("gateway", 1, 11.5, gw_cpu=0.05), _w("direct", 1, 11.0),
        _w("direct", 2, 1.2), _w("gateway", 2, 2.0, gw_cpu=0.02),
    ]  # fmt: skip
    got = report.gateway_pairs(windows)
    assert got["rounds"] == 3
    assert got["added_p50_ms"] == pytest.approx(0.5)
    assert got["added_p50_ms_spread"] == pytest.approx([0.5, 0.8])
    assert got["direct_p50_ms"] == pytest.approx(1.2)
    # 100 answered requests per window over 0.04 s of gateway CPU: 2,500 per core
    assert got["gateway_rps_per_core"] == pytest.approx(2500.0)
    assert got["gateway_rps_per_core_spread"] == pytest.approx([2000.0, 5000.0])
    assert got["gateway_cpu_ms_per_request"] == pytest.approx(0.4)
    assert got["runtime_cpu_ms_per_request_direct"] == pytest.approx(1.0)
    assert got["rps_ratio"] == pytest.approx(1.0)
    assert got["loadgen_bound"] is False and got["errors"] == 0


def test_a_busy_load_generator_and_errors_are_flagged() -> None:
    windows = [_w("direct", 0, 1.0, lg_cpu=0.95, errors=2), _w("gateway", 0, 1.4, gw_cpu=0.1)]
    got = report.gateway_pairs(windows)
    assert got["loadgen_bound"] is True and got["errors"] == 2
    assert "LOADGEN BUSY" in report.format_gateway([{"model": "m", "concurrency": 1, **got}])


def test_a_round_missing_one_path_is_left_out_and_no_cpu_is_nan() -> None:
    windows = [_w("direct", 0, 1.0), _w("gateway", 0, 1.5), _w("direct", 1, 9.0)]
    got = report.gateway_pairs(windows)
    assert got["rounds"] == 1 and got["added_p50_ms"] == pytest.approx(0.5)
    assert math.isnan(got["gateway_rps_per_core"])  # no gateway CPU measured: not infinite


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([], math.nan),  # nothing measured
        ([3.0, 1.0, 2.0], 2.0),  # odd: the middle one
        ([4.0, 1.0, 3.0, 2.0], 2.5),  # even: the mean of the middle two
        ([1.0, math.nan, 3.0], 2.0),  # NaN (a window without a figure) is left out
    ],
)
def test_median(values: list[float], want: float) -> None:
    got = report.median(values)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)


def _scrape(counts: list[float], total: float) -> str:
    bounds = ["0.0001", "0.0002", "0.0005", "+Inf"]
    lab = 'model="m",modeldeployment="m",namespace="default"'
    lines = [f'berth_gateway_overhead_seconds_bucket{{{lab},le="{b}"}} {c}'
             for b, c in zip(bounds, counts, strict=True)]  # fmt: skip
    lines += [f"berth_gateway_overhead_seconds_sum{{{lab}}} {total}",
              f"berth_gateway_overhead_seconds_count{{{lab}}} {counts[-1]}",
              f'berth_gateway_requests_total{{{lab},code="200"}} 9.0']  # fmt: skip
    return "\n".join(lines) + "\n"


def test_hist_delta_takes_the_window_between_two_scrapes() -> None:
    before = _scrape([10, 10, 10, 10], 0.001)  # 10 earlier requests, all under 0.1 ms
    # 100 more in the window: 20 under 0.1 ms, 60 in (0.1, 0.2], 20 in (0.2, 0.5]
    after = _scrape([30, 90, 110, 110], 0.001 + 0.016)
    got = report.hist_delta(before, after, "berth_gateway_overhead_seconds")
    assert got["count"] == 100
    assert got["mean"] == pytest.approx(0.00016)
    # the 50th of 100 lies 30 into the 60 of (0.1, 0.2] ms: 0.15 ms
    assert got["p50"] == pytest.approx(0.00015)
    none = report.hist_delta(after, after, "berth_gateway_overhead_seconds")
    assert none["count"] == 0 and math.isnan(none["p50"])
