"""`berth bench operator --smoke`: the benchmark still runs end to end on the dev cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_operator_bench_smoke_turns_every_model_ready(cluster: Any, tmp_path: Path) -> None:
    from kube_helpers import operator_stopped

    # the benchmark runs its own operator: another one would turn the models Ready for it
    operator_stopped(cluster)
    berth = Path(sys.executable).with_name("berth")
    proc = subprocess.run(
        [str(berth), "bench", "operator", "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (result_file,) = tmp_path.glob("operator-*.json")
    result = json.loads(result_file.read_text())
    assert result["scale"]["models"] == 4 and result["scale"]["ready"] == 4
    assert result["latency"]["samples"] == 3
    assert result["scale"]["all_ready_s"] is not None
