"""The Prometheus client against a real Prometheus, and against servers that fail:
a failure is never an empty vector (missing data is not zero)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from berth_operator.autoscaling.prometheus import BadQuery, Prometheus, Unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from berth_dev.prometheus import find_binary

    d = tmp_path_factory.mktemp("prom")
    (d / "prometheus.yml").write_text("global: {scrape_interval: 15s}\n")
    port = free_port()
    proc = subprocess.Popen(
        [find_binary(), f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


async def test_vector(prometheus: str) -> None:
    client = Prometheus(prometheus)
    try:
        got = await client.vector('label_replace(vector(3), "modeldeployment", "m", "", "")')
        assert [(s["metric"], s["value"][1]) for s in got] == [({"modeldeployment": "m"}, "3")]
        assert await client.vector("absent_series_xyz") == []  # empty: the caller's "no data"
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("query", "words"),
    [("sum(rate(", "parse error"), ("scalar(vector(1))", "scalar, not an instant vector"),
     ('"text"', "string, not an instant vector")],
)  # fmt: skip
async def test_bad_queries(prometheus: str, query: str, words: str) -> None:
    client = Prometheus(prometheus)
    try:
        with pytest.raises(BadQuery, match=words):
            await client.vector(query)
    finally:
        await client.close()


async def test_nobody_listening_is_unavailable() -> None:
    client = Prometheus(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(Unavailable, match="cannot reach Prometheus"):
            await client.vector("up")
    finally:
        await client.close()


async def test_no_url_is_unavailable() -> None:
    client = Prometheus("")
    with pytest.raises(Unavailable, match="PROMETHEUS_URL"):
        await client.vector("up")
    await client.close()


def _serve(answer: bytes | None) -> tuple[socket.socket, str]:
    """A TCP server answering every connection with `answer` (None: never answers)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            if answer is None:
                held.append(conn)  # keep it open, say nothing
            else:
                conn.recv(65536)
                conn.sendall(answer)
                conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.getsockname()[1]}"


async def test_slow_prometheus_times_out_as_unavailable() -> None:
    srv, url = _serve(None)
    client = Prometheus(url, timeout=0.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(Unavailable, match=r"did not answer within 1 s"):
            await client.vector("up")
        assert time.monotonic() - t0 < 3
    finally:
        await client.close()
        srv.close()


@pytest.mark.parametrize(
    ("answer", "words"),
    [(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nnot json!", "not JSON"),
     (b'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]', "not an object"),
     (b'HTTP/1.1 503 Service Unavailable\r\ncontent-length: 39\r\n\r\n'
      b'{"status":"error","error":"overloaded"}', "overloaded"),
     (b'HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{"status":"success"}', "without data")],
)  # fmt: skip
async def test_garbage_is_unavailable(answer: bytes, words: str) -> None:
    srv, url = _serve(answer)
    client = Prometheus(url)
    try:
        with pytest.raises(Unavailable, match=words):
            await client.vector("up")
    finally:
        await client.close()
        srv.close()


def test_prometheus_binary_exists() -> None:
    from berth_dev.prometheus import find_binary

    assert Path(find_binary()).exists()
