"""64 concurrent requests share forward passes, and each gets its own correct answer."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np
import pytest
import torch
from runtime_helpers import Server

pytestmark = pytest.mark.integration


def histogram(text: str, name: str) -> tuple[float, float]:
    count = re.search(rf'^{name}_count{{model="cnn"}} (\S+)$', text, re.M)
    total = re.search(rf'^{name}_sum{{model="cnn"}} (\S+)$', text, re.M)
    assert count and total, text
    return float(count.group(1)), float(total.group(1))


async def test_64_concurrent_requests_are_batched(ts_server: Server, cnn: torch.nn.Module) -> None:
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((1, 3, 16, 16), dtype=np.float32) for _ in range(64)]
    async with httpx.AsyncClient(base_url=ts_server.url, timeout=60) as client:
        before = histogram((await client.get("/metrics")).text, "berth_batch_size")

        async def one(x: np.ndarray) -> np.ndarray:
            header = (
                b'{"inputs":[{"name":"input__0","shape":[1,3,16,16],"datatype":"FP32",'
                b'"parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}'
                % x.nbytes
            )
            r = await client.post(
                "/v2/models/cnn/infer",
                content=header + x.tobytes(),
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            assert r.status_code == 200, r.text
            n = int(r.headers["inference-header-content-length"])
            return np.frombuffer(r.content[n:], dtype=np.float32).reshape(1, 10)

        results = await asyncio.gather(*(one(x) for x in xs))
        after = histogram((await client.get("/metrics")).text, "berth_batch_size")
    passes, rows = after[0] - before[0], after[1] - before[1]
    assert rows == 64
    assert passes < 64, f"{passes} forward passes for 64 requests"
    with torch.inference_mode():
        want = cnn(torch.from_numpy(np.concatenate(xs))).numpy()
    np.testing.assert_allclose(np.concatenate(results), want, rtol=1e-4, atol=1e-5)
