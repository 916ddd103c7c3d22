"""`berth bench gateway --smoke`: a runtime process directly and through the gateway."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def test_gateway_bench_smoke(tmp_path: Path) -> None:
    berth = Path(sys.executable).with_name("berth")
    proc = subprocess.run(
        [str(berth), "bench", "gateway", "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=380, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("gateway-*-smoke.json")
    doc = json.loads(path.read_text())
    rows = doc["results"]
    assert {r["concurrency"] for r in rows} == {1, 32}
    for r in rows:
        # interleaved rounds, both paths in each, every request answered both ways
        assert r["rounds"] == 3 and r["errors"] == 0
        assert [w["label"] for w in r["windows"]] == ["direct", "gateway", "gateway", "direct",
                                                      "direct", "gateway"]  # fmt: skip
        for w in r["windows"]:
            assert w["rps"] > 0 and w["runtime_cpu_s"] > 0
            assert math.isfinite(w["gateway_cpu_s"])
        # the gateway's CPU is measured in every window: direct ones (the gateway idle but
        # for its table watch) spend well under half of what proxying the same load costs
        cpu = {label: sum(w["gateway_cpu_s"] for w in r["windows"] if w["label"] == label)
               for label in ("direct", "gateway")}  # fmt: skip
        assert 0 <= cpu["direct"] < 0.5 * cpu["gateway"], cpu
        assert math.isfinite(r["gateway_rps_per_core"]) and math.isfinite(r["added_p50_ms"])
        lo, hi = r["added_p50_ms_spread"]
        assert lo <= r["added_p50_ms"] <= hi
        assert math.isfinite(r["runtime_cpu_ms_per_request_direct"])
        assert 0 < r["loadgen_cpu_util_max"] <= 1.5
    assert doc["summary"]["added_p50_ms_at_c1"] is not None
    assert "cold_start_overhead_s" in doc["summary"]
    assert len(doc["setup"]["load_average_before"]) == 3
    assert "results:" in proc.stdout and "added p50" in proc.stdout
