"""The gateway probes starting pods while it holds requests (warmup.py): the pure table
functions, and the gateway in front of a real local HTTP server listed as "not ready yet"
in its EndpointSlice: held requests go to it as soon as it answers its readiness GET,
and a starting pod that never answers keeps them held until the deadline."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from berth_runtime.gateway import warmup
from berth_runtime.gateway.proxy import Gateway
from berth_runtime.gateway.routing import (
    Endpoint,
    ModelInfo,
    SliceEndpoint,
    SliceInfo,
    Table,
    build_table,
)
from berth_runtime.gateway.settings import GatewaySettings

HERE = Path(__file__).parent
M = ModelInfo(namespace="default", name="m", served="m", replicas=1)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def table(*endpoints: SliceEndpoint, port: int = 8080, model: ModelInfo = M) -> Table:
    return build_table([model], [SliceInfo("default", "m", port, endpoints, model="m")])


# --- pure ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_build_table_lists_starting_endpoints_apart() -> None:
    t = table(SliceEndpoint("10.0.0.1", ready=False), SliceEndpoint("10.0.0.2", ready=True),
              SliceEndpoint("10.0.0.3", ready=False, terminating=True))  # fmt: skip
    route = t.routes[("default", "m")]
    assert route.endpoints == (Endpoint("10.0.0.2:8080"),)
    assert route.starting == (Endpoint("10.0.0.1:8080"),)  # terminating: never probed


@pytest.mark.unit
def test_warm_endpoints_serve_until_kubernetes_catches_up() -> None:
    starting = table(SliceEndpoint("10.0.0.1", ready=False))
    warm = {("default", "m"): frozenset({"10.0.0.1:8080"})}
    assert warmup.with_warm(starting, warm).routes[("default", "m")].endpoints == (
        Endpoint("10.0.0.1:8080"),
    )
    assert warmup.prune(warm, starting) == warm
    # Kubernetes says ready: its view wins, nothing kept
    assert warmup.prune(warm, table(SliceEndpoint("10.0.0.1", ready=True))) == {}
    # terminating or gone: dropped
    assert warmup.prune(warm, table(SliceEndpoint("10.0.0.1", ready=False, terminating=True))) == {}
    assert warmup.prune(warm, table()) == {}
    # an address the table never listed is never added
    other = {("default", "m"): frozenset({"10.9.9.9:8080"})}
    assert warmup.with_warm(starting, warmup.prune(other, starting)) == starting


@pytest.mark.unit
def test_warm_endpoints_take_all_traffic_of_a_model_with_a_canary() -> None:
    canary = ModelInfo(namespace="default", name="m", served="m", replicas=1, canary_weight=30)
    t = table(SliceEndpoint("10.0.0.1", ready=False), model=canary)
    route = warmup.with_warm(t, {("default", "m"): frozenset({"10.0.0.1:8080"})}).routes[
        ("default", "m")
    ]
    assert route.endpoints == route.stable == (Endpoint("10.0.0.1:8080"),)
    assert route.canary_percent == 0.0


# --- the gateway in front of a real server ---------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "upstream_app.py"), str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def ask(gateway: Gateway) -> httpx.Response:
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as c:
        return await c.post("/v2/models/m/infer", content=b'{"inputs": []}',
                            headers={"content-type": "application/json"})  # fmt: skip


@pytest.mark.integration
async def test_held_request_goes_to_a_starting_pod_that_answers_ready(upstream: int) -> None:
    gateway = Gateway(GatewaySettings(wake=False, hold_seconds=10))
    gateway.set_table(table(SliceEndpoint("127.0.0.1", ready=False), port=upstream))
    try:
        t0 = time.monotonic()
        r = await ask(gateway)
        took = time.monotonic() - t0
    finally:
        await gateway.aclose()
    assert r.status_code == 200, r.text
    assert r.json()["port"] == upstream and r.json()["path"] == "/v2/models/m/infer"
    assert "berth-cold-start" in r.headers  # it was held, then answered
    assert took < 5, took  # well before the 10 s deadline: no table change was needed
    assert gateway.warm == {("default", "m"): frozenset({f"127.0.0.1:{upstream}"})}


@pytest.mark.integration
async def test_a_starting_pod_that_never_answers_keeps_requests_held(upstream: int) -> None:
    dead = free_port()  # nothing listens: the probe is refused, again and again
    gateway = Gateway(GatewaySettings(wake=False, hold_seconds=1.5))
    gateway.set_table(table(SliceEndpoint("127.0.0.1", ready=False), port=dead))
    try:
        r = await ask(gateway)
    finally:
        await gateway.aclose()
    assert r.status_code == 503 and "retry-after" in r.headers, r.text
    assert gateway.warm == {}


@pytest.mark.integration
async def test_probing_can_be_turned_off(upstream: int) -> None:
    gateway = Gateway(GatewaySettings(wake=False, hold_seconds=1.5, probe_starting=False))
    gateway.set_table(table(SliceEndpoint("127.0.0.1", ready=False), port=upstream))
    try:
        r = await ask(gateway)
    finally:
        await gateway.aclose()
    assert r.status_code == 503, r.text
