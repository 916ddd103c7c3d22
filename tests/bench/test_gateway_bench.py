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
        # every request answered both ways; the gateway's own CPU time was measured
        assert r["errors"] == 0
        assert r["direct"]["rps"] > 0 and r["gateway"]["rps"] > 0
        assert r["gateway_cpu_s"] > 0 and math.isfinite(r["gateway_rps_per_core"])
        assert math.isfinite(r["added_p50_ms"])
    assert doc["summary"]["added_p50_ms_at_c1"] is not None
    assert "results:" in proc.stdout and "added p50" in proc.stdout
