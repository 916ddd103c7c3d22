"""`berth bench runtime` (the README's headline table) and `berth bench coldstart`, smoke-sized.

The runtime benchmark runs Berth and one peer (LitServe, its own cached virtualenv built
with uv) for a few seconds, from a plain login shell's PATH: `make` installs uv into
~/.local/bin, which such a PATH lacks, and the benchmark must find it all the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

BERTH = Path(sys.executable).with_name("berth")
LOGIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.mark.timeout(900)
def test_runtime_bench_measures_berth_and_a_peer(tmp_path: Path) -> None:
    # this environment, less the folders a plain login shell lacks (~/.local/bin, a venv)
    local_bin = str(Path.home() / ".local" / "bin")
    kept = [d for d in os.environ.get("PATH", LOGIN_PATH).split(os.pathsep)
            if d and d != local_bin and not d.endswith("/.venv/bin")]  # fmt: skip
    env = {**os.environ, "PATH": os.pathsep.join(kept)}
    proc = subprocess.run(
        [str(BERTH), "bench", "runtime", "--models", "trivial", "--servers", "berth,litserve",
         "--concurrency", "1", "--duration", "2", "--warmup", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=880, check=False, env=env, cwd="/",
    )  # fmt: skip
    out = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, out
    (path,) = tmp_path.glob("runtime-*.json")
    doc = json.loads(path.read_text())
    assert doc["complete"] is True
    rows = doc["results"]
    failed = [(r["server"], r["label"], r.get("reason")) for r in rows if r["status"] != "ok"]
    assert not failed, failed  # a peer row failing ("uv not found on PATH") fails here
    assert {r["server"] for r in rows} == {"berth", "litserve"}
    for r in rows:
        # every row measured real answers: requests made, none failed, a latency recorded
        assert r["rps"] > 1 and r["errors"] == 0 and r["p99_ms"] > 0, r
    assert doc["load_generator_ceiling"]["rps"] > 0


@pytest.mark.timeout(600)
def test_coldstart_bench_wakes_a_model_from_zero(cluster: Any, tmp_path: Path) -> None:
    from berth_dev.addons import Addons
    from kube_helpers import dev_operator_running

    # the whole loop: the real node, the dev gateway and the dev operator (started if a test
    # elsewhere stopped it: the gateway's wake-up goes through it)
    cluster.start_addons(Addons(node=True, prometheus=False, operator=True, examples=False))
    dev_operator_running(cluster)
    proc = subprocess.run(
        [str(BERTH), "bench", "coldstart", "--runs", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=580, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("coldstart-*.json")
    doc = json.loads(path.read_text())
    (run,) = doc["runs"]
    # the model's own load is part of the first response, measured by two clocks
    assert 0 < run["model_own_load_s"] < run["first_response_s"] < 300, run
    assert run["overhead_s"] == pytest.approx(run["first_response_s"] - run["model_own_load_s"],
                                              abs=0.01)  # fmt: skip
    # the phases one clock measures (the runtime's own) are durations; the parts that mix
    # clocks may be negative (the gateway forwards to a pod it probed before Kubernetes
    # marks it Ready; Kubernetes' timestamps have 1 s resolution), so they are not asserted
    parts = run["breakdown_s"]
    for phase in ("process_start_and_imports", "Fetching", "Loading", "WarmingUp"):
        assert parts[phase] is not None and parts[phase] >= 0, parts
    # the gateway's own account of the cold start (Berth-Cold-Start) fits in what we saw
    assert 0 < run["cold_start_header_s"] <= run["first_response_s"] + 0.5, run
    assert "cold start: first response" in proc.stdout
