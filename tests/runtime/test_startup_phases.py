"""The runtime reports its own start-up phases: GET /startup (no token) and the metrics.

One real `berth-runtime serve` process with the test CNN behind a bearer token: once
ready, /startup lists Fetching, Loading and WarmingUp in order, each finished with a
non-negative duration, after the process start and the imports, before readiness; the
same seconds appear as berth_runtime_startup_phase_seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from runtime_helpers import TOKEN, Server

pytestmark = pytest.mark.integration


def test_startup_document_and_metrics(model_dir: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    before = time.time()
    server = Server(
        ["--model-uri", str(model_dir / "ts"), "--format", "torchscript", "--name", "cnn",
         "--auth-token-file", str(token), "--cache-dir", str(tmp_path / "cache")],
        tmp_path / "server.log",
    )  # fmt: skip
    try:
        server.wait_ready()
        doc = httpx.get(f"{server.url}/startup", timeout=5).json()  # open: no token
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert httpx.get(f"{server.url}/v2/models/cnn", timeout=5).status_code == 401
    finally:
        server.stop()
    assert doc["model"] == "cnn" and doc["ready"] is True and doc["failed"] is None
    assert [p["name"] for p in doc["phases"]] == ["Fetching", "Loading", "WarmingUp"]
    # process start (10 ms ticks) <= imports done <= each phase, in order <= ready
    started = doc["processStartedAt"]
    assert before - 1 <= started <= doc["importedAt"] <= doc["phases"][0]["start"]
    last = doc["importedAt"]
    for phase in doc["phases"]:
        assert phase["seconds"] >= 0
        assert last <= phase["start"] <= phase["end"]
        assert phase["seconds"] == pytest.approx(phase["end"] - phase["start"])
        last = phase["end"]
    assert last <= doc["readyAt"] <= time.time()
    for phase in doc["phases"]:
        line = f'berth_runtime_startup_phase_seconds{{model="cnn",phase="{phase["name"]}"}}'
        sample = next(x for x in metrics.splitlines() if x.startswith(line))
        assert float(sample.rsplit(" ", 1)[1]) == pytest.approx(phase["seconds"])
