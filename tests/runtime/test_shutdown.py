"""SIGTERM with 50 requests in flight: readiness drops, all 50 finish, the process exits 0."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from runtime_helpers import Server

pytestmark = pytest.mark.integration


@pytest.fixture
def drain_server(tmp_path: Path) -> Iterator[Server]:
    """Its own slow server (1 s per pass of 4 rows): 50 requests stay in flight for ~13 s,
    so a busy machine cannot finish some before the last ones are sent."""
    import berth_test_models as m

    m.write_slow_double(tmp_path / "slow", delay_s=1.0)
    server = Server(
        ["--model-uri", str(tmp_path / "slow"), "--format", "safetensors", "--name", "slow",
         "--factory", "berth_test_models:build_slow_double", "--factory-allow",
         "berth_test_models", "--max-batch-size", "4", "--cache-dir", str(tmp_path / "cache")],
        tmp_path / "slow.log",
    )  # fmt: skip
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def inflight(text: str) -> float:
    m = re.search(r'^berth_inflight_requests\{model="slow"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_sigterm_drains_inflight_requests(drain_server: Server) -> None:
    slow_server = drain_server
    xs = [np.full((1, 4), i, dtype=np.float32) for i in range(50)]
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=slow_server.url, timeout=60, limits=limits) as client:

        async def one(x: np.ndarray) -> httpx.Response:
            body = {
                "inputs": [
                    {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x.ravel().tolist()}
                ]
            }
            return await client.post("/v2/models/slow/infer", json=body)

        tasks = [asyncio.create_task(one(x)) for x in xs]
        async with httpx.AsyncClient(base_url=slow_server.url, timeout=10) as probe:
            deadline = time.monotonic() + 30
            while inflight((await probe.get("/metrics")).text) < 50:
                assert time.monotonic() < deadline, "requests never got in flight"
                await asyncio.sleep(0.02)
        slow_server.proc.send_signal(signal.SIGTERM)
        responses = await asyncio.gather(*tasks)

    assert [r.status_code for r in responses] == [200] * 50
    for x, r in zip(xs, responses, strict=True):
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], (x * 2).ravel())
    assert await asyncio.to_thread(slow_server.proc.wait, 30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{slow_server.url}/v2/health/ready", timeout=2)
    assert "draining" in slow_server.output()
