"""One short run of the load generator against a bare uvicorn hello."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from berth_bench import loadgen

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_loadgen_counts_requests_and_errors() -> None:
    """One second against a bare uvicorn hello: /hello answers 200, /fail answers 500,
    and a closed port refuses; each must be counted as what it is."""
    port = _free_port()
    peers = Path(__file__).resolve().parents[2] / "bench" / "peers"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "hello_asgi:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=peers,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)

        def run(path: str, p: int = port) -> loadgen.LoadResult:
            return asyncio.run(
                loadgen.run_load(
                    f"http://127.0.0.1:{p}{path}",
                    concurrency=4,
                    duration_s=1.0,
                    warmup_s=0.2,
                    body=b'{"instances":[[1.0]]}',
                    timeout_s=5,
                )
            )

        ok = run("/hello")
        assert ok.requests > 50 and ok.errors == 0 and ok.rps == pytest.approx(ok.requests)
        assert 0 < ok.p50_ms <= ok.p99_ms
        assert ok.connections == 4  # keep-alive: one connection per closed loop
        bad = run("/fail")
        assert bad.requests > 50 and bad.errors == bad.requests
        assert bad.error_kinds == {"status_500": bad.requests}
        refused = run("/hello", _free_port())
        assert refused.requests > 0 and refused.errors == refused.requests
        assert set(refused.error_kinds) == {"connection"}
    finally:
        proc.terminate()
        proc.wait(10)
