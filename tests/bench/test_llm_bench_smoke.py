"""`berth bench llm --smoke`: Berth serves streaming chat under load, every answer correct."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_llm_bench_smoke(tmp_path: Path) -> None:
    berth = Path(sys.executable).with_name("berth")
    proc = subprocess.run(
        [str(berth), "bench", "llm", "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=580, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("llm-*-smoke.json")
    result = json.loads(path.read_text())
    rows = {r["concurrency"]: r for r in result["rows"] if r["server"] == "berth"}
    assert set(rows) == {1, 4}
    for row in rows.values():
        assert row["status"] == "ok"
        assert row["requests"] > 0 and row["wrong_or_failed"] == 0  # greedy = model.generate
        assert row["output_tokens_per_s"] > 0 and row["ttft_p99_s"] >= row["ttft_p50_s"] > 0
