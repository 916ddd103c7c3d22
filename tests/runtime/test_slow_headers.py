"""Slow-header senders (slowloris) are cut off: a deadline on reading each request's head.

A real runtime process with --header-timeout-s 1; raw sockets send the request line and
headers slowly. The ASGI app never sees such a request, so this is the server's own limit.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from runtime_helpers import Server

pytestmark = pytest.mark.integration

HEAD_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    logs = tmp_path_factory.mktemp("slowhead")
    srv = Server(
        ["--model-uri", str(model_dir / "ts"), "--format", "torchscript", "--name", "cnn",
         "--header-timeout-s", str(HEAD_TIMEOUT), "--cache-dir", str(logs / "cache")],
        logs / "runtime.log",
    )  # fmt: skip
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (fails after 10 s)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def _trickle(sock: socket.socket, parts: list[bytes], pause: float) -> float:
    """Send parts with a pause between them; returns when the server cut us off (or all sent)."""
    started = time.monotonic()
    try:
        for part in parts:
            sock.sendall(part)
            time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return time.monotonic() - started


HEAD = [b"GET /v2/models/cnn HTTP/1.1\r\n", b"Host: x\r\n"] + [
    f"X-Slow-{i}: {i}\r\n".encode() for i in range(40)
]


def test_slow_headers_get_408_and_the_connection_closed(server: Server) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        _trickle(sock, HEAD, pause=0.1)  # 4 s of headers, never finished in time
        reply = _read_all(sock)
        took = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"request headers not received within 1 s" in reply
    assert HEAD_TIMEOUT <= took < HEAD_TIMEOUT + 4.5, took


def test_a_silent_connection_is_closed(server: Server) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        reply = _read_all(sock)  # send nothing at all
        took = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert took < HEAD_TIMEOUT + 2, took


def test_headers_in_time_are_served_and_keep_alive_rearms(server: Server) -> None:
    with _connect(server) as sock:
        # headers over ~0.4 s: within the deadline
        _trickle(sock, [b"GET /v2/models/cnn HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"], 0.2)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        # the same keep-alive connection, a second request whose head is too slow
        _trickle(sock, HEAD, pause=0.1)
        reply = _read_all(sock)
    assert b"HTTP/1.1 408" in reply, reply[:200]


def test_server_still_serves_after_slow_senders(server: Server) -> None:
    socks = [_connect(server) for _ in range(20)]
    for s in socks:
        s.sendall(b"GET /v2/models/cnn HTTP/1.1\r\n")  # twenty half-sent heads
    assert httpx.get(f"{server.url}/v2/models/cnn", timeout=5).status_code == 200
    time.sleep(HEAD_TIMEOUT + 1)
    for s in socks:
        s.settimeout(5)
        assert _read_all(s).startswith(b"HTTP/1.1 408")
        s.close()
