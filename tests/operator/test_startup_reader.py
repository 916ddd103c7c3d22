"""The operator's read of a runtime's GET /startup against a real HTTP server on loopback:
a good document is parsed, and a tenant's pod cannot make the operator read (or keep) an
answer of any size, nor make it raise."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from berth_operator import startup_reader
from berth_operator.startup_reader import StartupReader

pytestmark = pytest.mark.integration

GOOD = {
    "processStartedAt": 100.0,
    "importedAt": 104.0,
    "readyAt": 106.0,
    "phases": [
        {"name": "Fetching", "start": 104.0, "end": 104.5},
        {"name": "Loading", "start": 104.5, "end": 105.0},
        {"name": "WarmingUp", "start": 105.0, "end": 106.0},
    ],
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/startup":
            self.send_error(404)
            return
        answer = self.server.answer  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def reader(srv: ThreadingHTTPServer) -> StartupReader:
    return StartupReader(port=lambda: srv.server_address[1], spawn=lambda _: None,
                         on_result=lambda _: None)  # fmt: skip


async def test_reads_the_runtime_document(server: ThreadingHTTPServer) -> None:
    server.answer = json.dumps(GOOD).encode()  # type: ignore[attr-defined]
    r = reader(server)
    report, why = await r.fetch("127.0.0.1")
    await r.close()
    assert why == "" and report is not None
    assert [p[0] for p in report.phases] == ["Fetching", "Loading", "WarmingUp"]
    assert (report.process_started, report.ready) == (100.0, 106.0)


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"[" + b"1," * startup_reader.MAX_REPORT_BYTES + b"1]", "larger than"),
        (b"{not json", "JSONDecodeError"),
        (json.dumps({"phases": [{"name": "Compiling"}]}).encode(), "phases[0]"),
    ],
    ids=["too large", "not JSON", "unknown phase"],
)
async def test_a_bad_answer_is_refused_with_a_reason(
    server: ThreadingHTTPServer, answer: bytes, says: str
) -> None:
    server.answer = answer  # type: ignore[attr-defined]
    r = reader(server)
    report, why = await r.fetch("127.0.0.1")
    await r.close()
    assert report is None and says in why, why


async def test_nothing_listening_is_a_reason_not_an_error() -> None:
    r = StartupReader(port=lambda: 9, spawn=lambda _: None, on_result=lambda _: None)
    report, why = await r.fetch("127.0.0.1")
    await r.close()
    assert report is None and "ConnectError" in why, why
