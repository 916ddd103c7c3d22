"""The gateway under a hostile corpus: a real gateway process (static routes), a real
`berth-runtime serve` process (a TorchScript identity model: it echoes the tensor it gets),
a real uvicorn app that echoes what arrived (path, headers, body) and a raw-socket server
that misbehaves as a hostile model pod might (raw_upstream.py); raw sockets as clients
where a well-behaved client library would not send the bytes.

Each row: the request, the answer the gateway must give, and why. Rows marked "main:"
say what the gateway did before (checked against that code). The gateway's memory is
read from /proc: the peak over the whole corpus and with 1,000 idle connections are
asserted under RSS_LIMIT_MIB and printed (`pytest -s`; runtime README, gateway section).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HERE = Path(__file__).parent
RUNTIME = str(Path(sys.executable).parent / "berth-runtime")
HEAD_TIMEOUT = 2.0  # the gateway's head deadline here (s)
BUDGET = 8 * 1024 * 1024  # the gateway's global byte budget here
COLD = 40  # cold models (no endpoint): their requests are held
RSS_LIMIT_MIB = 100  # the gateway process, peak over the corpus (it idles near 45)
FIGURES: dict[str, float] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{proc.args!r} exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer in {timeout:.0f} s"
        time.sleep(0.2)


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field_name} for {pid}")


def tensor(n: int) -> list[float]:
    """A tensor no other request carries (the identity model echoes it)."""
    return [float(n * 16 + k) for k in range(16)]


def infer_body(n: int) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16],
                                   "data": tensor(n)}]}).encode()  # fmt: skip


class OrdinaryLoad:
    """Well-behaved clients for the whole corpus (two threads, keep-alive, one request at a
    time each), each request with its own tensor: every answer must be its own. A 503 with
    Retry-After (the budget spent by a hostile row) is an answer too; anything else is not."""

    def __init__(self, base: str) -> None:
        self.url = f"{base}/v2/models/trivial/infer"
        self.stop = threading.Event()
        self.ok = self.refused = 0
        self.wrong: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                        for k in range(2)]  # fmt: skip

    def _run(self, k: int) -> None:
        n = 200_000 * (k + 1)  # (n * 16 stays exact in float32)
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                n += 1
                try:
                    r = client.post(self.url, content=infer_body(n),
                                    headers={"content-type": "application/json"})  # fmt: skip
                except httpx.HTTPError as exc:
                    self.wrong.append(f"{n}: {exc!r}")
                    continue
                if r.status_code == 503 and r.headers.get("retry-after"):
                    self.refused += 1
                elif r.status_code == 200 and r.json()["outputs"][0]["data"] == tensor(n):
                    self.ok += 1
                else:
                    self.wrong.append(f"{n}: {r.status_code} {r.text[:100]}")
                time.sleep(0.05)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


@dataclass
class Stack:
    base: str
    port: int
    pid: int
    logs: Path
    load: OrdinaryLoad


def start_gateway(static: str, logs: Path, **settings: object) -> subprocess.Popen[bytes]:
    port = int(str(settings.pop("port")))
    env = {**os.environ, **{f"BERTH_GATEWAY_{k.upper()}": str(v) for k, v in settings.items()}}
    log = (logs / f"gateway-{port}.log").open("wb")
    return subprocess.Popen([RUNTIME, "gateway", "--port", str(port), "--static", static,
                             "--log-level", "warning"], env=env, stdout=log, stderr=log)  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from berth_bench.models import prepare

    logs = tmp_path_factory.mktemp("hostile")
    model = prepare("trivial")  # identity on [-1, 16] FP32 (cached under ~/.cache/berth)
    rt, echo, raw, gw = free_port(), free_port(), free_port(), free_port()
    rt_log = (logs / "runtime.log").open("wb")
    procs = [
        subprocess.Popen([RUNTIME, "serve", "--model-uri", str(model.path.parent), "--format",
                          "torchscript", "--name", "trivial", "--host", "127.0.0.1", "--port",
                          str(rt)], env={**os.environ, "BERTH_THREADS": "1"},
                         stdout=rt_log, stderr=rt_log),
        subprocess.Popen([sys.executable, str(HERE / "upstream_app.py"), str(echo)]),
        subprocess.Popen([sys.executable, str(HERE / "raw_upstream.py"), str(raw)]),
    ]  # fmt: skip
    static = ",".join([f"trivial=127.0.0.1:{rt}", f"echo=127.0.0.1:{echo}",
                       f"raw=127.0.0.1:{raw}", *(f"cold{i}=" for i in range(COLD))])  # fmt: skip
    procs.append(start_gateway(
        static, logs, port=gw, head_timeout_seconds=HEAD_TIMEOUT, budget_max_bytes=BUDGET,
        max_body_bytes=2 * 1024 * 1024, hold_seconds=8, max_connections=3000,
    ))  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{rt}/v2/health/ready", procs[0])
        wait_http(f"http://127.0.0.1:{echo}/", procs[1])
        base = f"http://127.0.0.1:{gw}"
        wait_http(f"{base}/healthz", procs[3])
        FIGURES["idle_rss_mib"] = rss_mib(procs[3].pid)
        load = OrdinaryLoad(base)
        for t in load.threads:
            t.start()
        yield Stack(base, gw, procs[3].pid, logs, load)
        load.finish()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


# -- a raw client ---------------------------------------------------------------------------
@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before it
    closed: bool = False  # the gateway closed the connection

    def json(self) -> Any:
        return json.loads(self.body)

    def echoed(self) -> dict[str, str]:
        """The fields the echo upstream received (its JSON answer)."""
        return {k: v for k, v in self.json()["headers"]}


class _Reader:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.cur = Answer()
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.cur.headers[name.decode().lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.cur.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.cur.body += body

    def on_message_complete(self) -> None:
        if self.cur.status < 200:
            interim = [*self.cur.interim, self.cur.status]
            self.cur = Answer(interim=interim)
            return
        self.answers.append(self.cur)
        self.cur = Answer()


def read_answers(sock: socket.socket, n: int = 1, timeout: float = 10) -> list[Answer]:
    """Read `n` final answers (1xx ones recorded on the next), or until the connection
    closes or `timeout` passes."""
    reader = _Reader()
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while len(reader.answers) < n and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            if reader.cur.status:
                reader.answers.append(reader.cur)
            if reader.answers:
                reader.answers[-1].closed = True
            break
        reader.parser.feed_data(data)
    return reader.answers


def exchange(stack: Stack, raw: bytes, timeout: float = 10) -> Answer:
    with socket.create_connection(("127.0.0.1", stack.port)) as sock:
        sock.sendall(raw)
        answers = read_answers(sock, 1, timeout)
    assert answers, f"no answer to {raw[:120]!r}"
    return answers[0]


def closed_within(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def req(method: str, path: str, headers: str = "", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body or method == "POST" else ""
    return f"{method} {path} HTTP/1.1\r\nHost: gw\r\n{headers}{length}\r\n".encode() + body


# -- the corpus -----------------------------------------------------------------------------
Check = Callable[[Answer], bool]
E = "/v2/models/echo/echo"


def no_fields(*names: str) -> Check:
    return lambda a: not set(names) & set(a.echoed())


ROWS: list[tuple[str, bytes, int, Check | None, str]] = [
    # request framing: refused by the server's parser (llhttp), the model never sees them
    ("cl-and-te", b"POST " + E.encode() + b" HTTP/1.1\r\nHost: g\r\nContent-Length: 4\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n", 400, None,
     "both framings: the classic request-smuggling desync (RFC 9112 6.1)"),
    ("two-lengths", b"POST " + E.encode() + b" HTTP/1.1\r\nHost: g\r\nContent-Length: 4\r\n"
     b"Content-Length: 5\r\n\r\nabcde", 400, None, "two different Content-Lengths"),
    ("same-length-twice", b"POST " + E.encode() + b" HTTP/1.1\r\nHost: g\r\nContent-Length: 3"
     b"\r\nContent-Length: 3\r\n\r\nabc", 400, None, "duplicate Content-Length, refused too"),
    ("signed-length", b"POST " + E.encode() + b" HTTP/1.1\r\nHost: g\r\nContent-Length: +3"
     b"\r\n\r\nabc", 400, None,
     "a Content-Length that is not 1*DIGIT"),
    ("bad-chunk-size", b"POST " + E.encode() + b" HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: "
     b"chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, None, "a chunk size that is not hex"),
    ("bare-lf-chunks", b"POST " + E.encode() + b" HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: "
     b"chunked\r\n\r\n3\nabc\n0\n\n", 400, None, "chunk lines ended by LF alone"),
    ("te-not-chunked", b"POST " + E.encode() + b" HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: "
     b"identity\r\nContent-Length: 3\r\n\r\nabc", 400, None, "a transfer coding other than chunked"),
    ("obs-fold", b"GET " + E.encode() + b" HTTP/1.1\r\nHost: g\r\nX-A: a\r\n b\r\n\r\n", 400,
     None, "an obsolete line folding (RFC 9112 5.2): a header another parser reads otherwise"),
    # encoded paths: one parse decides route and upstream path
    ("encoded-slash-route", req("GET", "/ns/default%2Fv2%2Fmodels%2Fecho/metrics"), 400,
     lambda a: "%2F" in a.json()["error"], "main: routed to echo, the pod answered /metrics"),
    ("encoded-prefix", req("GET", "/ns%2Fdefault%2Fv2%2Fmodels%2Fecho/echo"), 400,
     lambda a: "%2F" in a.json()["error"], "main: a 500 (the raw path had no /ns/ to cut)"),
    ("encoded-dots", req("GET", "/v2/models/echo/%2e%2e/%2E%2E/metrics"), 400,
     lambda a: "%2E" in a.json()["error"], "main: forwarded, a normalizing server sees /metrics"),
    ("dot-dot", req("GET", "/v2/models/echo/../../metrics"), 400,
     lambda a: "'..'" in a.json()["error"], "main: forwarded as is (dot-segments)"),
    ("dot", req("GET", "/v2/models/echo/./echo"), 400,
     lambda a: "'.'" in a.json()["error"], "a single-dot segment"),
    ("encoded-backslash", req("GET", "/v2/models/echo%5C..%5Cmetrics"), 400,
     lambda a: "%5C" in a.json()["error"], "main: model 'echo\\..\\metrics' (a 404 at best)"),
    ("backslash", req("GET", "/v2/models/echo/a\\b/echo"), 400,
     lambda a: "'\\'" in a.json()["error"], "a literal backslash: a separator on some servers"),
    ("openai-shape", req("POST", "/v1/chat/%2e%2e/embeddings"), 400,
     lambda a: "%2E" in a.json()["error"]["message"], "refusals answer in the route's shape"),
    ("encoded-name", req("GET", "/ns/%64efault/v2/models/%65cho/echo"), 200,
     lambda a: a.json()["path"] == "/v2/models/%65cho/echo",
     "plain percent-encoding decodes for the route; the model gets the same raw path"),
    ("odd-bytes", req("GET", "/v2/models/echo/%ff%00/echo"), 200,
     lambda a: a.json()["path"] == "/v2/models/echo/%ff%00/echo", "not a 500: passed as sent"),
    ("junk-path", req("GET", "/%ff/%00%zz"), 404, None, "no route, not a 500"),
    ("no-slash", b"OPTIONS * HTTP/1.1\r\nHost: g\r\n\r\n", 400, None, "asterisk-form: no path to route"),
    # header fields
    ("connection-named", req("GET", E, "Connection: keep-alive, X-Secret, Keep-Alive\r\n"
     "X-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\n"), 200,
     lambda a: no_fields("x-secret", "keep-alive", "connection")(a) and "x-kept" in a.echoed(),
     "main: fields named in Connection were forwarded (RFC 9110 7.6.1)"),
    ("client-forwarded", req("GET", E, "X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n"
     "X-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n"), 200,
     lambda a: a.echoed().get("x-forwarded-for") == "127.0.0.1"
     and a.echoed().get("x-forwarded-proto") == "http"
     and no_fields("forwarded", "x-forwarded-host")(a),
     "main: a client's X-Forwarded-*/Forwarded passed untouched (spoofed source)"),
    ("expect-dropped", req("POST", E, "Expect: 100-continue\r\n", b"abc"), 200,
     lambda a: a.interim == [100] and no_fields("expect")(a) and a.json()["body"] == "abc",
     "the gateway answers Expect itself; the model must never send a 100 of its own"),
    ("te-header", req("GET", E, "TE: trailers\r\nProxy-Connection: keep-alive\r\n"), 200,
     no_fields("te", "proxy-connection"), "hop-by-hop fields stay at the gateway"),
    # what a hostile model pod sends back
    ("early-hints", req("POST", "/v2/models/raw/hints", body=b"h-1"), 200,
     lambda a: a.body == b"h-1" and "link" not in a.headers,
     "main: the 103 was relayed as the final answer and the connection pooled"),
    ("two-interims", req("POST", "/v2/models/raw/twohints", body=b"h-2"), 200,
     lambda a: a.body == b"h-2", "100 then 103 in one write, then the answer"),
    ("unasked-upgrade", req("GET", "/v2/models/raw/upgrade"), 502,
     lambda a: "101" in a.json()["error"], "a 101 nobody asked for is no answer"),
    ("huge-response-head", req("GET", "/v2/models/raw/hugehead"), 502,
     lambda a: "head over" in a.json()["error"], "main: read an unending header for ever"),
    ("response-connection", req("GET", "/v2/models/raw/connhdr"), 200,
     lambda a: "x-internal" not in a.headers and a.headers.get("x-public") == "yes",
     "fields a response's Connection names are hop-by-hop too"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "want", "check"), [r[1:4] for r in ROWS],
                         ids=[r[0] for r in ROWS])  # fmt: skip
def test_hostile_corpus(stack: Stack, raw: bytes, want: int, check: Check | None) -> None:
    answer = exchange(stack, raw)
    assert answer.status == want, (answer.status, answer.body[:300])
    assert check is None or check(answer), (answer.headers, answer.body[:300])


def test_every_row_says_why() -> None:
    for name, _, _, _, why in ROWS:
        assert len(why) > 10, name


def test_expect_100_continue_each_client_gets_its_own_answer(stack: Stack) -> None:
    # main: the model's uvicorn sent its own 100 Continue, the gateway's upstream client took
    # it for the answer, relayed 100 as final and pooled the connection with the real 200
    # still to come: the next client on it got this one's tensor. Here 3 attackers (Expect,
    # some waiting for the 100, some sending at once) among 36 ordinary clients, each with a
    # tensor no other request carries, echoed by the model (identity).
    url = f"{stack.base}/v2/models/trivial/infer"
    body = infer_body

    def ordinary(n: int) -> list[str]:
        wrong = []
        with httpx.Client(timeout=30) as client:
            for i in range(5):
                r = client.post(url, content=body(n * 100 + i),
                                headers={"content-type": "application/json"})  # fmt: skip
                got = r.json()["outputs"][0]["data"] if r.status_code == 200 else r.text
                if got != tensor(n * 100 + i):
                    wrong.append(f"client {n} request {i}: {r.status_code} {str(got)[:80]}")
        return wrong

    def attacker(n: int) -> list[str]:
        wrong = []
        with socket.create_connection(("127.0.0.1", stack.port)) as sock:
            for i in range(5):
                data = body(n * 100 + i)
                head = (f"POST /v2/models/trivial/infer HTTP/1.1\r\nHost: gw\r\nContent-Type: "
                        f"application/json\r\nExpect: 100-continue\r\nContent-Length: "
                        f"{len(data)}\r\n\r\n").encode()  # fmt: skip
                if n % 2:  # wait for the interim answer, as curl does
                    sock.sendall(head)
                    sock.settimeout(10)
                    interim = sock.recv(4096)
                    assert interim.startswith(b"HTTP/1.1 100 "), interim
                    sock.sendall(data)
                else:  # the body at once, the 100 unread
                    sock.sendall(head + data)
                (a,) = read_answers(sock, 1, 30)
                got = a.json()["outputs"][0]["data"] if a.status == 200 else a.body
                if a.status != 200 or got != tensor(n * 100 + i):
                    wrong.append(f"attacker {n} request {i}: {a.status} {str(got)[:80]}")
        return wrong

    with ThreadPoolExecutor(39) as pool:
        jobs = [pool.submit(attacker, 1000 + k) for k in range(3)]
        jobs += [pool.submit(ordinary, k) for k in range(36)]
        wrong = [w for j in jobs for w in j.result()]
    assert wrong == [], wrong


def test_a_connection_with_a_stray_response_is_never_pooled(stack: Stack) -> None:
    # the pod writes its answer and a second, unasked one in the same write: the first is
    # the client's; the connection is closed, so no later request reads "NOT YOURS"
    with httpx.Client(timeout=10) as client:
        for i in range(10):
            r = client.post(f"{stack.base}/v2/models/raw/stray", content=f"s-{i}")
            assert r.status_code == 200 and r.content == f"s-{i}".encode(), r.content
            r = client.post(f"{stack.base}/v2/models/raw/plain", content=f"p-{i}")
            assert r.status_code == 200 and r.content == f"p-{i}".encode(), r.content


def test_a_96_mib_header_line_gets_431_and_memory_stays_bounded(stack: Stack) -> None:
    # main: the gateway read the whole line (httptools reads heads unbounded)
    before = rss_mib(stack.pid)
    sock = socket.create_connection(("127.0.0.1", stack.port))
    sent = [0]

    def flood() -> None:
        line = b"a" * (1024 * 1024)
        try:
            sock.sendall(b"GET /v2/models/echo/echo HTTP/1.1\r\nHost: gw\r\nX-Huge: ")
            for _ in range(96):
                sock.sendall(line)
                sent[0] += len(line)
        except OSError:
            pass  # the gateway stopped reading and closed: as it should

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    answers = read_answers(sock, 1, 30)
    thread.join(30)
    sock.close()
    assert answers and answers[0].status == 431, answers
    assert "request head over" in answers[0].json()["error"]
    after = rss_mib(stack.pid)
    FIGURES["huge_head_rss_growth_mib"] = after - before
    assert after - before < 16, (before, after)


def test_streams_to_clients_that_do_not_read_are_buffered_in_bytes(stack: Stack) -> None:
    # 8 clients ask for a 256 MiB answer the model writes as fast as it can, and read
    # nothing: the gateway keeps at most 128 KiB of each (then stops reading the model).
    # main: 64 chunks each, whatever their size (~16 MiB a stream here)
    before = rss_mib(stack.pid)
    socks = []
    try:
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", stack.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(req("GET", "/v2/models/raw/flood"))
            socks.append(s)
        peak = before
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            peak = max(peak, rss_mib(stack.pid))
            time.sleep(0.1)
        FIGURES["unread_streams_rss_growth_mib"] = peak - before
        assert peak - before < 24, (before, peak)
    finally:
        for s in socks:
            s.close()


def test_a_slow_head_is_cut_at_the_deadline(stack: Stack) -> None:
    # slowloris: a byte every 0.1 s keeps the connection "active" for ever on main
    sock = socket.create_connection(("127.0.0.1", stack.port))
    t0 = time.monotonic()
    head = b"GET /v2/models/echo/echo HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 200
    try:
        for b in head:
            sock.sendall(bytes([b]))
            time.sleep(0.1)
            if time.monotonic() - t0 > HEAD_TIMEOUT + 5:
                break
    except OSError:
        pass
    answers = read_answers(sock, 1, 5)
    sock.close()
    assert answers and answers[0].status == 408, answers
    assert time.monotonic() - t0 < HEAD_TIMEOUT + 5


def test_a_slow_second_head_on_a_kept_alive_connection_is_cut_too(stack: Stack) -> None:
    # the deadline runs per request: a quick first request, then a trickled second head
    sock = socket.create_connection(("127.0.0.1", stack.port))
    for _ in range(3):  # quick ones first: the deadline armed by the first must not fire
        sock.sendall(req("GET", E))
        (a,) = read_answers(sock, 1, 5)
        assert a.status == 200
    time.sleep(HEAD_TIMEOUT * 0.6)  # idle (keep-alive) time does not count against a head
    t0 = time.monotonic()
    try:
        for b in b"GET /v2/models/echo/echo HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 200:
            sock.sendall(bytes([b]))
            time.sleep(0.1)
            if time.monotonic() - t0 > HEAD_TIMEOUT + 5:
                break
    except OSError:
        pass
    answers = read_answers(sock, 1, 5)
    sock.close()
    assert answers and answers[0].status == 408, answers
    assert HEAD_TIMEOUT - 0.5 < time.monotonic() - t0 < HEAD_TIMEOUT + 5


def test_a_connection_that_sends_nothing_is_closed(stack: Stack) -> None:
    # main: open for ever
    with socket.create_connection(("127.0.0.1", stack.port)) as sock:
        t0 = time.monotonic()
        answers = read_answers(sock, 1, HEAD_TIMEOUT + 5)
        assert answers and answers[0].status == 408, answers
        assert closed_within(sock, 3), "the connection stayed open after the 408"
        assert time.monotonic() - t0 < HEAD_TIMEOUT + 3


def test_many_cold_models_held_at_once_share_one_budget(stack: Stack) -> None:
    # 40 models with no endpoint, a 1 MiB body each: each model's own hold cap (64 MiB)
    # admits them all; the gateway's one budget (8 MiB) holds 7 at most and refuses the
    # rest at once with 503 and Retry-After. main: all 40 held (40 MiB, unbounded in N)
    payload = b"x" * (1024 * 1024)
    answers: dict[int, tuple[float, httpx.Response]] = {}

    def one(i: int) -> None:
        t = time.monotonic()
        r = httpx.post(f"{stack.base}/v2/models/cold{i}/infer", content=payload, timeout=30)
        answers[i] = (time.monotonic() - t, r)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(COLD)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(answers) < COLD - BUDGET // len(payload) and time.monotonic() < deadline:
        time.sleep(0.05)
    FIGURES["cold_hold_rss_mib"] = rss_mib(stack.pid)  # while the admitted ones are held
    for t in threads:
        t.join(40)
    refused = [r for _, r in answers.values() if "retry" in r.text and "limit" in r.text]
    held = [r for _, r in answers.values() if "hold deadline" in r.text]
    assert len(answers) == COLD
    assert all(r.status_code == 503 and r.headers.get("retry-after") for _, r in answers.values())
    assert len(held) <= BUDGET // len(payload) and len(held) >= 1, len(held)
    assert len(refused) + len(held) == COLD, [r.text[:100] for _, r in answers.values()]
    # the budget is whole again once they are answered: a small request passes
    r = httpx.post(f"{stack.base}/v2/models/echo/echo", content=b"after", timeout=10)
    assert r.status_code == 200 and r.json()["body"] == "after"


def test_a_thousand_idle_connections_stay_cheap(stack: Stack) -> None:
    socks = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", stack.port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            socks.append(s)
        for s in socks:  # each answered, then idle in keep-alive
            (a,) = read_answers(s, 1, 30)
            assert a.status == 200
        FIGURES["idle_1000_rss_mib"] = rss_mib(stack.pid)
        assert FIGURES["idle_1000_rss_mib"] < RSS_LIMIT_MIB
        # and the gateway still answers at once
        assert httpx.get(f"{stack.base}/v2/models/echo/echo", timeout=5).status_code == 200
    finally:
        for s in socks:
            s.close()


def test_no_input_gave_a_500_and_memory_stayed_bounded(stack: Stack) -> None:
    # the last test on the shared stack: the peak RSS over the corpus above, and the ordinary clients
    # that ran all along each got their own answer
    stack.load.finish()
    assert stack.load.wrong == [], stack.load.wrong[:10]
    assert stack.load.ok > 20, (stack.load.ok, stack.load.refused)
    FIGURES["ordinary_answers"] = stack.load.ok
    FIGURES["ordinary_refused_503"] = stack.load.refused
    FIGURES["peak_rss_mib"] = rss_mib(stack.pid, "VmHWM")
    print("\ngateway memory (MiB):", json.dumps({k: round(v, 1) for k, v in FIGURES.items()}))
    assert FIGURES["peak_rss_mib"] < RSS_LIMIT_MIB, FIGURES
    log = "".join(p.read_text(errors="replace") for p in stack.logs.glob("gateway-*.log"))
    assert "Traceback" not in log and "gateway error" not in log, log[-3000:]


def test_the_connection_limit_answers_503(tmp_path: Path) -> None:
    # a gateway with room for 20 connections: the ones over the limit get 503 (uvicorn's
    # limit_concurrency), the first ones keep their answers
    port = free_port()
    proc = start_gateway("m=127.0.0.1:9", tmp_path, port=port, max_connections=20)
    socks = []
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60)
        statuses = []
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            socks.append(s)
            (a,) = read_answers(s, 1, 10)
            statuses.append(a.status)
        assert statuses[:15] == [200] * 15 and statuses[-5:] == [503] * 5, statuses
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)


def test_the_request_budget_counts_every_model(tmp_path: Path) -> None:
    # room for 3 requests in the whole gateway: 5 callers naming 5 cold models get 3 held
    # (each model's own cap would admit them all) and 2 refused at once, 503 Retry-After
    port = free_port()
    static = ",".join(f"c{i}=" for i in range(5))
    proc = start_gateway(static, tmp_path, port=port, budget_max_requests=3, hold_seconds=4)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60)

        def one(i: int) -> tuple[float, httpx.Response]:
            t = time.monotonic()
            r = httpx.post(f"http://127.0.0.1:{port}/v2/models/c{i}/infer", content=b"{}",
                           timeout=30)  # fmt: skip
            return time.monotonic() - t, r

        with ThreadPoolExecutor(5) as pool:
            got = list(pool.map(one, range(5)))
        refused = [(t, r) for t, r in got if "limit of 3 requests" in r.text]
        held = [(t, r) for t, r in got if "hold deadline" in r.text]
        assert len(refused) == 2 and len(held) == 3, [r.text for _, r in got]
        assert all(r.status_code == 503 and r.headers["retry-after"] for _, r in got)
        assert all(t < 2 for t, _ in refused) and all(t >= 3.5 for t, _ in held)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
