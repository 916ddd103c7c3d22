"""`berth bench autoscale --smoke`: 20 autoscaled models, a real Prometheus, the operator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_autoscale_bench_smoke(cluster: Any, tmp_path: Path) -> None:
    berth = Path(sys.executable).with_name("berth")
    proc = subprocess.run(
        [str(berth), "bench", "autoscale", "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=580, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("autoscale-*-smoke.json")
    result = json.loads(path.read_text())
    scale = result["scale"]
    assert scale["models"] == 20 and scale["models_scaling_active"] == 20
    # whatever the number of models: one query per metric query in use, one for the demand seen
    # at the gateway. The bench's 20 models share one (2); models of earlier tests whose
    # namespaces are still being deleted may add their own type's query (3 seen in CI), but one
    # query per model would give 21
    assert 2 <= scale["autoscaler_tick"]["queries_per_tick_operator"] <= 4, scale["autoscaler_tick"]
    # Prometheus' own query counter agrees with what the operator says it sends (not one per model)
    per_tick = scale["autoscaler_tick"]["queries_per_tick_operator"]
    assert 0 < scale["prometheus_queries_per_tick"] <= per_tick + 0.5, scale
    assert scale["autoscaler_tick"]["ticks"] > 0
    # the operator's own process was sampled: Python with kopf and lightkube weighs ~100-250
    # MB (bench/results/autoscale-*.json); a shell or an exited pid would weigh a few MB
    assert 50 < scale["operator_peak_rss_mb"] < 1024, scale["operator_peak_rss_mb"]
