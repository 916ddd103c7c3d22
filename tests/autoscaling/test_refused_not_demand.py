"""Refused requests are no demand: a real runtime (`berth-runtime serve`, bearer token
on), scraped every second by a real Prometheus with the labels the scrape configuration
gives runtime pods, answers a flood of 401s (no token) and 404s (an unknown model); the
autoscaler's rps, concurrency and latencyP95 read 0 for it. Served requests then count.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from berth_operator.autoscaling.prometheus import Prometheus
from loop_host import Host, one_tick
from promstack import Prom, start

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS, NAME, TOKEN = "refused", "tiny", "tok-3f9"
BIN = Path(sys.executable).parent / "berth-runtime"
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import torch

    d = tmp_path_factory.mktemp("tiny")
    with warnings.catch_warnings():  # torch.jit.script is deprecated in favour of export
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(torch.nn.Linear(4, 2)).save(str(d / "model.pt"))
    (d / "berth.json").write_text(
        json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]})
    )
    port = free_port()
    env = {**os.environ, "BERTH_HOST": "127.0.0.1", "BERTH_PORT": str(port),
           "BERTH_THREADS": "1", "BERTH_AUTH_TOKEN": TOKEN}  # fmt: skip
    log = (d / "runtime.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN), "serve", "--model-uri", str(d), "--format", "torchscript", "--name", NAME,
         "--cache-dir", str(d / "cache")],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, (d / "runtime.log").read_text()
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (d / "runtime.log").read_text()
        time.sleep(0.25)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def prom(runtime: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    target = runtime.removeprefix("http://")
    labels = {"namespace": NS, "modeldeployment": NAME, "pod": f"{NAME}-0"}
    config = json.dumps({"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                         "scrape_configs": [{"job_name": "runtime", "static_configs": [
                             {"targets": [target], "labels": labels}]}]})  # fmt: skip
    yield from start(tmp_path_factory.mktemp("prom-refused"), config=config)


def traffic(url: str, stop: threading.Event, headers: dict[str, str], path: str) -> None:
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            client.post(f"{url}{path}", json=BODY, headers=headers)


async def value(url: str, type_: str) -> Any:
    """The value the autoscaler computes for the runtime's model with metric `type_`."""
    host = Host()
    key = host.add(NS, NAME, {"minReplicas": 1, "maxReplicas": 100,
                              "metric": {"type": type_, "target": 1}})  # fmt: skip
    await one_tick(host, url)
    return host.status(key).get("value")


async def poll(what: str, check: Any, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.5)


async def test_refused_requests_are_no_demand(runtime: str, prom: Prom) -> None:
    stop = threading.Event()
    threads = [
        threading.Thread(target=traffic, args=(runtime, stop, {}, f"/v2/models/{NAME}/infer")),
        threading.Thread(target=traffic, args=(runtime, stop, {"Authorization": f"Bearer {TOKEN}"},
                                               "/v2/models/other/infer")),
    ]  # fmt: skip
    for t in threads:
        t.start()
    client = Prometheus(prom.url)
    try:

        async def flooding() -> bool:
            # the refused traffic is there, in the series the autoscaler reads
            got = await client.vector(
                'min(sum by (code) (rate(berth_requests_total{code=~"401|404"}[10s])) > 1)'
                " and on () count(count_over_time(berth_requests_total[10s]) >= 5)"
            )
            return bool(got)

        await poll("401s and 404s scraped from the runtime", flooding)
        for type_ in ("rps", "concurrency", "latencyP95"):
            assert await value(prom.url, type_) == 0.0, type_
    finally:
        stop.set()
        for t in threads:
            t.join()
        await client.close()

    # the counterpart: served requests count (the same labels, the same queries)
    stop = threading.Event()
    served = threading.Thread(target=traffic, args=(runtime, stop, {"Authorization":
                              f"Bearer {TOKEN}"}, f"/v2/models/{NAME}/infer"))  # fmt: skip
    served.start()
    try:

        async def counting() -> bool:
            got = await value(prom.url, "rps")
            return got is not None and got > 1

        await poll("served requests counted by rps", counting)
        assert (await value(prom.url, "latencyP95") or 0) > 0
    finally:
        stop.set()
        served.join()
