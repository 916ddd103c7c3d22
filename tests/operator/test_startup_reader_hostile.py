"""The operator's read of GET /startup against hostile pods, on real sockets on loopback.

The pod is the tenant's. A pod that drips its answer one byte a second is abandoned
within the reader's one overall deadline while another model's startup status is read
and recorded meanwhile; every malformed answer is reported once (one log line, one
request: asking again cannot help) in status.startup's message, and nothing raises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from berth_operator import startup_reader
from berth_operator.startup import PHASES
from berth_operator.startup_reader import StartupReader

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T_CREATED, T_SCHEDULED, T_STARTED, T_READY = (
    "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z",
    "2026-01-01T00:00:09Z",
)  # fmt: skip
BASE = 1767225600.0  # 2026-01-01T00:00:00Z
GOOD = {
    "processStartedAt": BASE + 2.0,
    "importedAt": BASE + 4.0,
    "readyAt": BASE + 8.0,
    "phases": [
        {"name": "Fetching", "start": BASE + 4.0, "end": BASE + 5.0},
        {"name": "Loading", "start": BASE + 5.0, "end": BASE + 7.0},
        {"name": "WarmingUp", "start": BASE + 7.0, "end": BASE + 8.0},
    ],
}


def ready_pod(uid: str, ip: str) -> dict[str, Any]:
    """A Ready runtime pod, as the API server shows it."""
    return {
        "metadata": {"name": f"pod-{uid}", "uid": uid, "creationTimestamp": T_CREATED},
        "status": {
            "podIP": ip,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": T_SCHEDULED},
                {"type": "Ready", "status": "True", "lastTransitionTime": T_READY},
            ],
            "containerStatuses": [
                {"name": "runtime", "state": {"running": {"startedAt": T_STARTED}}}
            ],
        },
    }


class Recorder:
    """The reader's spawn and on_result, recording real tasks and when results came."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.results: list[tuple[tuple[str, str], float]] = []

    def spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))

    def on_result(self, key: tuple[str, str]) -> None:
        self.results.append((key, time.monotonic()))


def _port_free_on(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@asynccontextmanager
async def drip_and_good_servers(drip_headers: bool) -> AsyncIterator[tuple[int, list[float]]]:
    """One port: 127.0.0.2 drips one byte a second; 127.0.0.1 answers GOOD at once.
    Yields the port and the times the dripping server's connections were closed."""
    closed: list[float] = []
    good = json.dumps(GOOD).encode()

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        if drip_headers:
            payload = head + b"x-slow: " + b"a" * 10_000
        else:
            writer.write(head + b"content-length: 100000\r\n\r\n")
            payload = b"[" + b"1," * 50_000
        try:
            for i in range(len(payload)):
                writer.write(payload[i : i + 1])
                await writer.drain()
                await asyncio.sleep(1.0)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            closed.append(time.monotonic())
            writer.close()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                     + str(len(good)).encode() + b"\r\n\r\n" + good)  # fmt: skip
        await writer.drain()
        writer.close()

    for _ in range(20):
        ok_server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = ok_server.sockets[0].getsockname()[1]
        if _port_free_on("127.0.0.2", port):
            break
        ok_server.close()
    drip_server = await asyncio.start_server(drip, "127.0.0.2", port)
    try:
        yield port, closed
    finally:
        for srv in (ok_server, drip_server):
            srv.close()


@pytest.mark.parametrize(
    "drip_headers",
    [
        # the status line and headers at once, then the body one byte a second: each
        # read is within httpx's per-read timeout, so only an overall deadline ends it
        False,
        # the headers themselves dripped: the same, before the status is even known
        True,
    ],
    ids=["body", "headers"],
)
async def test_a_dripping_pod_is_abandoned_while_another_models_status_is_read(
    drip_headers: bool,
) -> None:
    async with drip_and_good_servers(drip_headers) as (port, closed):
        rec = Recorder()
        reader = StartupReader(port=lambda: port, spawn=rec.spawn, on_result=rec.on_result)
        t0 = time.monotonic()
        reader.pod_event(("ns", "dripping"), ready_pod("d", "127.0.0.2"), deleted=False)
        reader.pod_event(("ns", "good"), ready_pod("g", "127.0.0.1"), deleted=False)
        drip_task, good_task = rec.tasks
        try:
            await asyncio.wait_for(asyncio.shield(good_task), timeout=3)
            # the good model's status is written while the dripping read still runs
            assert not drip_task.done()
            assert [k for k, _ in rec.results] == [("ns", "good")]
            good = reader.status(("ns", "good"))
            assert good is not None and [p["name"] for p in good["phases"]] == list(PHASES)
            limit = 5.0 + 3.0
            await asyncio.wait_for(asyncio.shield(drip_task), timeout=limit)
        finally:
            for task in rec.tasks:
                task.cancel()
            await reader.close()
        took = time.monotonic() - t0
        assert took < 5.0 + 3.0, took
        dripped = reader.status(("ns", "dripping"))
        assert dripped is not None
        assert "abandoned" in dripped["message"], dripped
        # the runtime's phases are left out (missing is not zero), the pod's are there
        assert [p["name"] for p in dripped["phases"]] == ["Scheduling", "Pulling"]
        assert {k for k, _ in rec.results} == {("ns", "good"), ("ns", "dripping")}
        # the dripping connection was closed by the reader, not left open
        deadline = time.monotonic() + 5
        while not closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert closed, "the reader left the dripping connection open"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        answer = self.server.answer  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def doc(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def raw_doc(field: str, literal: str) -> bytes:
    """GOOD with one field's value replaced by a JSON literal json.dumps cannot write."""
    body = {**GOOD, field: "@@"}
    return json.dumps(body).encode().replace(b'"@@"', literal.encode())


MALFORMED = [
    # deeply nested arrays (under the size limit): Python's parser would recurse until
    # RecursionError, which main let escape
    (b"[" * 30_000 + b"]" * 30_000, "nested more than"),
    # deeply nested objects inside a valid-looking document
    (b'{"phases": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_001, "nested more than"),
    # a number too large for a float: float() raised OverflowError on main
    (raw_doc("processStartedAt", "1" + "0" * 400), "processStartedAt is out of range"),
    # an integer past Python's integer-string limit: the parser refuses it
    (raw_doc("readyAt", "9" * 5_000), "not JSON"),
    # 1e400 parses to infinity; main wrote it into status.startup's arithmetic
    (raw_doc("importedAt", "1e400"), "importedAt is out of range"),
    # a finite but absurd time: no calendar date; main raised in assemble
    (raw_doc("readyAt", "1e300"), "readyAt is out of range"),
    # NaN is accepted by Python's json; no time is NaN
    (raw_doc("processStartedAt", "NaN"), "processStartedAt is out of range"),
    # negative time
    (doc(readyAt=-1e12), "readyAt is out of range"),
    # phases of the wrong type: iterating a number raised TypeError on main
    (doc(phases=5), "phases is not a list"),
    # phases as an object, not a list
    (doc(phases={"name": "Fetching"}), "phases is not a list"),
    # a phase's time as a string
    (doc(phases=[{"name": "Fetching", "start": "soon", "end": BASE}]), "phases[0].start"),
    # a boolean is not a number (bool is an int in Python)
    (doc(readyAt=True), "readyAt is not a number"),
    # too many phases
    (doc(phases=[{"name": "Fetching"}] * 100), "more than 16 entries"),
    # an unknown phase name, and an unhashable one
    (doc(phases=[{"name": ["Fetching"]}]), "phases[0] is not one of"),
    # not UTF-8
    (b'{"readyAt": "\xff\xfe"}', "not UTF-8"),
    # UTF-16 with a BOM: json.loads(bytes) would guess the encoding; the runtime writes UTF-8
    (json.dumps(GOOD).encode("utf-16"), "not UTF-8"),
    # not JSON at all
    (b"<html>hello</html>", "not JSON"),
    # not an object
    (b"[1, 2, 3]", "not a JSON object"),
    # larger than the limit: refused unread
    (b"[" + b"1," * startup_reader.MAX_REPORT_BYTES + b"1]", "larger than"),
]


@pytest.mark.parametrize(("answer", "says"), MALFORMED, ids=[s for _, s in MALFORMED])
async def test_a_malformed_answer_is_reported_once_without_raising(
    server: ThreadingHTTPServer,
    caplog: pytest.LogCaptureFixture,
    answer: bytes,
    says: str,
) -> None:
    server.answer = answer  # type: ignore[attr-defined]
    rec = Recorder()
    reader = StartupReader(port=lambda: server.server_address[1], spawn=rec.spawn,
                           on_result=rec.on_result)  # fmt: skip
    caplog.set_level(logging.INFO, logger="berth_operator.startup")
    reader.pod_event(("ns", "m"), ready_pod("p", "127.0.0.1"), deleted=False)
    try:
        (task,) = rec.tasks
        await asyncio.wait_for(task, timeout=5.0 + 3)
    finally:
        await reader.close()
    assert task.exception() is None
    result = reader.status(("ns", "m"))
    assert result is not None, "no status.startup was recorded"
    assert says in result["message"], result["message"]
    assert [p["name"] for p in result["phases"]] == ["Scheduling", "Pulling"]
    assert [k for k, _ in rec.results] == [("ns", "m")]
    refusals = [r for r in caplog.records if "not read" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]
    assert server.hits == 1  # type: ignore[attr-defined]
