"""The gateway process in front of a real local HTTP server (static routes, no cluster):
the one retry when an endpoint refuses the connection, headers and bodies passed through,
responses streamed (server-sent events arrive as they are produced), least outstanding
requests across endpoints, and its metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HERE = Path(__file__).parent
RUNTIME = str(Path(sys.executable).parent / "berth-runtime")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[str, list[str]]]:
    ups = [free_port(), free_port()]
    dead = free_port()  # nothing listens here: connection refused
    procs = [subprocess.Popen([sys.executable, str(HERE / "upstream_app.py"), str(p)])
             for p in ups]  # fmt: skip
    gw_port = free_port()
    routes = ",".join([f"m=127.0.0.1:{dead}", *(f"m=127.0.0.1:{p}" for p in ups)])
    env = {**os.environ, "BERTH_GATEWAY_MAX_BODY_BYTES": str(1024 * 1024)}
    procs.append(subprocess.Popen([RUNTIME, "gateway", "--port", str(gw_port), "--static", routes,
                                   "--log-level", "warning"], env=env))  # fmt: skip
    try:
        for p in ups:
            wait_http(f"http://127.0.0.1:{p}/")
        base = f"http://127.0.0.1:{gw_port}"
        wait_http(f"{base}/healthz")
        yield base, [f"127.0.0.1:{p}" for p in ups]
    finally:
        for proc in procs[:-1]:
            proc.kill()  # the test app (its abandoned streams would sleep on)
        procs[-1].terminate()  # the gateway drains
        for proc in procs:
            proc.wait(timeout=10)


def test_refused_endpoint_is_retried_and_headers_and_bodies_pass(
    stack: tuple[str, list[str]],
) -> None:
    base, _ = stack
    body = b"x" * (3 * 1024 * 1024)  # streamed to the model, several chunks
    with httpx.Client(timeout=10) as client:
        for _ in range(30):  # a third of first picks hit the dead endpoint: each retried once
            r = client.post(f"{base}/v2/models/m/infer?a=1", content=body,
                            headers={"authorization": "Bearer s3cret"})  # fmt: skip
            assert r.status_code == 200, r.text
            doc = r.json()
            doc.pop("port")
            assert doc == {"method": "POST", "path": "/v2/models/m/infer", "query": "a=1",
                           "authorization": "Bearer s3cret", "body_bytes": len(body)}  # fmt: skip
        # the namespace prefix is removed before forwarding
        r = client.post(f"{base}/ns/default/v1/models/m:predict", json={"instances": [1]})
        assert r.json()["path"] == "/v1/models/m:predict"
        # OpenAI: the model named in the body
        r = client.post(f"{base}/v1/embeddings", json={"model": "m", "input": "hi"})
        assert r.status_code == 200 and r.json()["path"] == "/v1/embeddings"
        # a body the gateway must read whole (the model is inside it) is bounded: 413, and
        # a streamed one is not (the 3 MiB above went through with a 1 MiB limit)
        big = b'{"model": "m", "input": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        r = client.post(f"{base}/v1/embeddings", content=big)
        assert r.status_code == 413 and "exceeds" in r.json()["error"]["message"], r.text
    text = httpx.get(f"{base}/metrics").text
    assert (
        'berth_gateway_requests_total{code="200",model="m",modeldeployment="m",namespace="default"} 32.0'
        in text
    )


def test_server_sent_events_stream_through(stack: tuple[str, list[str]]) -> None:
    base, _ = stack
    arrived: list[tuple[float, bytes]] = []
    t0 = time.monotonic()
    with httpx.stream("GET", f"{base}/v2/models/m/sse", timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        for chunk in r.iter_raw():
            arrived.append((time.monotonic() - t0, chunk))
    assert b"".join(c for _, c in arrived) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    # each event arrives when the model sends it (0, 0.5, 1.0 s), not all at the end
    assert len(arrived) >= 2 and arrived[-1][0] - arrived[0][0] >= 0.8, arrived


def test_a_stream_stops_when_its_client_leaves(stack: tuple[str, list[str]]) -> None:
    base, _ = stack
    # 20 events, 0.5 s apart (10 s): read the first, leave
    with httpx.stream("GET", f"{base}/v2/models/m/sse?n=20", timeout=10) as r:
        next(r.iter_raw())
    t0 = time.monotonic()
    labels = 'model="m",modeldeployment="m",namespace="default"'

    def in_flight() -> float:
        text = httpx.get(f"{base}/metrics").text
        line = next(x for x in text.splitlines()
                    if x.startswith(f"berth_gateway_requests_in_flight{{{labels}}}"))  # fmt: skip
        return float(line.rsplit(" ", 1)[1])

    while in_flight() > 0:
        assert time.monotonic() - t0 < 3, "the stream went on after its client left"
        time.sleep(0.05)


def test_least_outstanding_spreads_concurrent_slow_requests(
    stack: tuple[str, list[str]],
) -> None:
    base, live = stack

    def slow(_: int) -> int:
        r = httpx.post(f"{base}/v2/models/m/slow", timeout=10)
        assert r.status_code == 200, r.text
        return int(r.json()["port"])

    with ThreadPoolExecutor(8) as pool:
        ports = list(pool.map(slow, range(8)))
    # 8 concurrent 1 s requests over two live endpoints: the fewest in flight wins each
    # time, so the split is even (a refused pick is retried on a live one)
    counts = {p: ports.count(p) for p in {int(a.rsplit(":", 1)[1]) for a in live}}
    assert all(n >= 3 for n in counts.values()), counts


@pytest.mark.parametrize("size", [0, 1000, 64 * 1024, 64 * 1024 + 1, 1024 * 1024])
def test_known_length_answers_arrive_whole_small_or_large(
    stack: tuple[str, list[str]], size: int
) -> None:
    # up to 64 KiB an answer of known length is relayed as one message once whole; above,
    # it streams chunk by chunk: either way the client gets every byte and the length
    base, _ = stack
    want = (b"0123456789" * (size // 10 + 1))[:size]
    r = httpx.get(f"{base}/v2/models/m/big?n={size}", timeout=20)
    assert r.status_code == 200
    assert r.headers["content-length"] == str(size) and r.content == want
    assert "date" in r.headers  # the gateway's own, one per response


def test_head_requests_get_the_head_alone(stack: tuple[str, list[str]]) -> None:
    # a HEAD answer has a head and no body: the gateway's server writes the head at the
    # end of the loop iteration, and the connection stays usable
    base, _ = stack
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            r = client.head(f"{base}/v2/models/m/big?n=500")
            assert r.status_code == 200 and r.content == b""
            assert r.headers["content-length"] == "500"
        r = client.get(f"{base}/v2/models/m/big?n=500")
        assert r.status_code == 200 and len(r.content) == 500


def test_the_gateway_reports_its_own_time_per_request(stack: tuple[str, list[str]]) -> None:
    # berth_gateway_overhead_seconds: the proxy's own time, the wait for the model left
    # out; the 1 s /slow requests must not land in it (they would if the wait counted)
    base, _ = stack
    labels = 'model="m",modeldeployment="m",namespace="default"'

    def hist() -> tuple[float, float]:
        text = httpx.get(f"{base}/metrics").text
        get = {x.rsplit(" ", 1)[0]: float(x.rsplit(" ", 1)[1]) for x in text.splitlines()
               if x.startswith("berth_gateway_overhead_seconds_")}  # fmt: skip
        return (get.get(f"berth_gateway_overhead_seconds_count{{{labels}}}", 0.0),
                get.get(f"berth_gateway_overhead_seconds_sum{{{labels}}}", 0.0))  # fmt: skip

    n0, s0 = hist()
    with httpx.Client(timeout=10) as client:
        for _ in range(5):
            assert client.post(f"{base}/v2/models/m/slow").status_code == 200
    n1, s1 = hist()
    assert n1 - n0 == 5
    assert 0 < (s1 - s0) / 5 < 0.5, (s1 - s0) / 5  # far below the model's 1 s
