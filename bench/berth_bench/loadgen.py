"""A closed-loop HTTP/1.1 load generator: one implementation for every server.

`concurrency` connections each send a request, wait for the whole response and send the
next one (closed loop, keep-alive). Requests that complete during the warm-up are not
recorded; the measured window is the fixed `duration` that follows. A non-2xx status, a
broken connection and a timeout each count as an error (and the connection is reopened).

It is built on uvloop + httptools (both come with `uvicorn[standard]`) so that one core
drives several thousand requests per second; `berth bench runtime` runs it in its own
process pinned to its own CPU and states its measured ceiling next to the results.

Run as a program it prints `MEASURE_START` / `MEASURE_END` lines around the measured
window (so the caller can sample the server's CPU time) and then one JSON line.

With `--peer URL --rounds N` it compares two targets fairly (`berth bench gateway`): each
target first gets the warm-up, then N rounds of one window on each, in ABBA order (A B,
B A, A B, ...) so that a drift of the machine's background load hits both alike, over
connections kept open across windows. Each window prints `MEASURE_START <label> <round>`,
`MEASURE_END <label> <round>` and then its JSON line (with "label" and "round").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import httptools


@dataclass
class LoadResult:
    """What one run measured. Latencies are in milliseconds."""

    concurrency: int
    duration_s: float
    requests: int  # completed in the window, errors included
    errors: int
    error_kinds: dict[str, int] = field(default_factory=dict)
    rps: float = 0.0  # successful requests per second
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    mean_ms: float = math.nan
    max_ms: float = math.nan
    loadgen_cpu_s: float = 0.0  # CPU time the generator itself used in the window
    connections: int = 0  # TCP connections opened (== concurrency when keep-alive holds)
    first_error: str = ""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, linear interpolation
    between closest ranks (numpy's default); NaN for no values."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def summarize(
    latencies_ms: list[float],
    errors: dict[str, int],
    concurrency: int,
    duration_s: float,
    loadgen_cpu_s: float = 0.0,
    first_error: str = "",
    connections: int = 0,
) -> LoadResult:
    """Turn raw per-request latencies (successes only) and error counts into a result."""
    ok = sorted(latencies_ms)
    n_err = sum(errors.values())
    return LoadResult(
        concurrency=concurrency,
        duration_s=duration_s,
        requests=len(ok) + n_err,
        errors=n_err,
        error_kinds=dict(errors),
        rps=len(ok) / duration_s if duration_s > 0 else 0.0,
        p50_ms=percentile(ok, 50),
        p90_ms=percentile(ok, 90),
        p99_ms=percentile(ok, 99),
        mean_ms=sum(ok) / len(ok) if ok else math.nan,
        max_ms=ok[-1] if ok else math.nan,
        loadgen_cpu_s=loadgen_cpu_s,
        first_error=first_error,
        connections=connections,
    )


def build_request(
    url: str, method: str = "POST", body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[str, int, bytes]:
    """(host, port, raw HTTP/1.1 request bytes) for a keep-alive request."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http://host:port/path URLs are supported, got {url!r}")
    port = parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.hostname}:{port}"]
    hdrs = {"Connection": "keep-alive", **(headers or {})}
    if body or method in ("POST", "PUT"):
        hdrs["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return parts.hostname, port, head + body


class _Conn(asyncio.Protocol):
    """One keep-alive connection; `request()` resolves with the status code."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.lost = False
        self.keep_alive = True  # read at message end: httptools forgets it after

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exc or ConnectionResetError("connection closed by server"))

    # httptools callbacks
    def on_message_complete(self) -> None:
        self.keep_alive = bool(self.parser.should_keep_alive())
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_result(self.parser.get_status_code())

    def _fail(self, exc: BaseException) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(exc)


async def run_load(
    url: str,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.0,
    method: str = "POST",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    on_phase: Callable[[str], None] | None = None,
    slots: list[_Conn | None] | None = None,
) -> LoadResult:
    """Drive `concurrency` closed-loop connections for warm-up + `duration_s` seconds.

    `slots` (one per connection) keeps the connections open after the run, for the next
    window: then only the first window opens connections."""
    host, port, raw = build_request(url, method, body, headers)
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    first_error = [""]
    opened = [0]
    clock = time.perf_counter
    t_begin = clock()
    t_start = t_begin + warmup_s
    t_end = t_start + duration_s

    def count_error(kind: str, detail: str, t_done: float) -> None:
        if t_start <= t_done <= t_end:
            errors[kind] = errors.get(kind, 0) + 1
            if not first_error[0]:
                first_error[0] = detail[:300]

    async def worker(i: int) -> None:
        conn: _Conn | None = slots[i] if slots is not None else None
        while True:
            now = clock()
            if now >= t_end:
                break
            try:
                if conn is None or conn.lost or conn.transport is None:
                    _, conn = await loop.create_connection(_Conn, host, port)
                    opened[0] += 1
                conn.parser = httptools.HttpResponseParser(conn)
                fut: asyncio.Future[int] = loop.create_future()
                conn.waiter = fut
                t0 = clock()
                assert conn.transport is not None
                conn.transport.write(raw)
                status = await asyncio.wait_for(fut, timeout_s)
                t1 = clock()
                if 200 <= status < 300:
                    if t_start <= t1 <= t_end:
                        latencies.append((t1 - t0) * 1000.0)
                else:
                    count_error(f"status_{status}", f"HTTP {status}", t1)
                if not conn.keep_alive:
                    conn.transport.close()
                    conn = None
            except TimeoutError:
                count_error("timeout", f"no response within {timeout_s}s", clock())
                conn = _close(conn)
            except (OSError, httptools.HttpParserError) as exc:
                count_error("connection", f"{type(exc).__name__}: {exc}", clock())
                conn = _close(conn)
                await asyncio.sleep(0.01)  # do not spin on a refused port
        if slots is not None:
            slots[i] = conn
        else:
            _close(conn)

    async def phases() -> tuple[float, float]:
        await asyncio.sleep(max(0.0, t_start - clock()))
        c0 = _cpu_s()
        if on_phase:
            on_phase("MEASURE_START")
        await asyncio.sleep(max(0.0, t_end - clock()))
        c1 = _cpu_s()
        if on_phase:
            on_phase("MEASURE_END")
        return c0, c1

    phase_task = asyncio.ensure_future(phases())
    if slots is not None and len(slots) < concurrency:
        slots.extend([None] * (concurrency - len(slots)))
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    c0, c1 = await phase_task
    return summarize(latencies, errors, concurrency, duration_s, c1 - c0, first_error[0], opened[0])


def abba(labels: Sequence[str], rounds: int) -> list[tuple[str, int]]:
    """(label, round) windows: round r runs the labels in order when r is even and
    reversed when odd (A B, B A, A B ...), so a linear drift cancels out."""
    out: list[tuple[str, int]] = []
    for r in range(rounds):
        out += [(lab, r) for lab in (labels if r % 2 == 0 else list(reversed(labels)))]
    return out


async def run_interleaved(
    targets: Sequence[tuple[str, str]],
    *,
    rounds: int,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    settle_s: float = 0.2,
    emit: Callable[[str], None],
    method: str = "POST",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> None:
    """Warm every (label, url) target up, then ABBA windows; each window's result is
    emitted as one JSON line after its `MEASURE_END <label> <round>` line."""
    slots: dict[str, list[_Conn | None]] = {lab: [] for lab, _ in targets}
    urls = dict(targets)
    for lab, url in targets:
        await run_load(url, concurrency=concurrency, duration_s=0.0, warmup_s=warmup_s,
                       method=method, body=body, headers=headers, timeout_s=timeout_s,
                       slots=slots[lab])  # fmt: skip
    for lab, r in abba([lab for lab, _ in targets], rounds):

        def phase(name: str, lab: str = lab, r: int = r) -> None:
            emit(f"{name} {lab} {r}")

        res = await run_load(urls[lab], concurrency=concurrency, duration_s=duration_s,
                             warmup_s=settle_s, on_phase=phase, slots=slots[lab], method=method,
                             body=body, headers=headers, timeout_s=timeout_s)  # fmt: skip
        emit(json.dumps({"label": lab, "round": r, **asdict(res)}))
    for conns in slots.values():
        for conn in conns:
            _close(conn)


def _close(conn: _Conn | None) -> None:
    if conn is not None and conn.transport is not None:
        conn.transport.close()
    return None


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m berth_bench.loadgen", description=__doc__)
    p.add_argument("url")
    p.add_argument("--method", default="POST")
    p.add_argument("--body-file", help="request body, sent as is")
    p.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    p.add_argument("--concurrency", "-c", type=int, default=1)
    p.add_argument("--duration", "-d", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", "-w", type=float, default=2.0, help="unrecorded seconds first")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request seconds")
    p.add_argument("--peer", help="a second URL: interleaved windows against the first")
    p.add_argument("--rounds", type=int, default=1, help="with --peer: windows per target")
    p.add_argument("--labels", default="a,b", help="with --peer: the two targets' labels")
    p.add_argument("--settle", type=float, default=0.2, help="unrecorded seconds per window")
    a = p.parse_args(argv)
    body = b""
    if a.body_file:
        with open(a.body_file, "rb") as f:
            body = f.read()
    headers = dict(h.split(":", 1) for h in a.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}

    def on_phase(name: str) -> None:
        print(name, flush=True)

    try:
        import uvloop

        runner: Callable[..., LoadResult] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    if a.peer:
        labels = a.labels.split(",")
        runner(
            run_interleaved(
                [(labels[0], a.url), (labels[1], a.peer)],
                rounds=a.rounds,
                concurrency=a.concurrency,
                duration_s=a.duration,
                warmup_s=a.warmup,
                settle_s=a.settle,
                emit=on_phase,
                method=a.method,
                body=body,
                headers=headers,
                timeout_s=a.timeout,
            )
        )
        return 0
    res = runner(
        run_load(
            a.url,
            concurrency=a.concurrency,
            duration_s=a.duration,
            warmup_s=a.warmup,
            method=a.method,
            body=body,
            headers=headers,
            timeout_s=a.timeout,
            on_phase=on_phase,
        )
    )
    print(json.dumps(asdict(res)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
