"""A real Prometheus for the autoscaler's query tests, fed through its own remote-write
receiver (`--web.enable-remote-write-receiver`): series are written as Prometheus stores
scraped ones, with the labels the scrape configuration gives runtime and gateway pods.

The client is small and written here on purpose: a remote-write 1.0 request is a
protobuf `WriteRequest` (four message types, encoded by hand below) compressed with
snappy's block format; snappy's format allows a stream of literals only, which is what
`snappy_block` writes (Prometheus decodes it with the reference decoder).

Samples are written every second from a minute ago to ten minutes ahead, so an instant
query at any moment of a test sees a window that is fully covered: rate() of a counter
that grows by `slope` per second is exactly `slope`, a gauge is its value.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PAST_S = 60
AHEAD_S = 600


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # wire type 2: length-delimited
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _sample(value: float, ts_ms: int) -> bytes:
    # Sample {double value = 1; int64 timestamp = 2;}
    return b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(ts_ms & (2**64 - 1))


def write_request(series: Sequence[tuple[Mapping[str, str], Sequence[tuple[float, int]]]]) -> bytes:
    """WriteRequest {repeated TimeSeries timeseries = 1}; labels sorted by name."""
    out = bytearray()
    for labels, samples in series:
        ts = bytearray()
        for name in sorted(labels):
            ts += _field(1, _field(1, name.encode()) + _field(2, labels[name].encode()))
        for value, t in samples:
            ts += _field(2, _sample(value, t))
        out += _field(1, bytes(ts))
    return bytes(out)


def snappy_block(data: bytes) -> bytes:
    """Snappy block format: the uncompressed length, then literal elements (tag 61: a
    two-byte length), at most 64 KiB each."""
    out = bytearray(_varint(len(data)))
    for i in range(0, len(data), 65536):
        chunk = data[i : i + 65536]
        out += bytes([61 << 2]) + struct.pack("<H", len(chunk) - 1) + chunk
    return bytes(out)


@dataclass
class Prom:
    url: str
    proc: subprocess.Popen[bytes]

    def write(
        self, series: Sequence[tuple[Mapping[str, str], Sequence[tuple[float, int]]]]
    ) -> None:
        body = snappy_block(write_request(series))
        req = urllib.request.Request(
            f"{self.url}/api/v1/write", data=body, method="POST",
            headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                     "X-Prometheus-Remote-Write-Version": "0.1.0"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status in (200, 204), resp.status

    def gauge(self, labels: Mapping[str, str], value: float) -> None:
        """A constant gauge, every second over the covered span."""
        self.write([(labels, [(value, t) for t in span_ms()])])

    def counter(self, labels: Mapping[str, str], slope: float, start: float = 1000.0) -> None:
        """A counter growing by `slope` per second over the covered span."""
        times = span_ms()
        self.write([(labels, [(start + slope * i, t) for i, t in enumerate(times)])])

    def histogram(self, name: str, labels: Mapping[str, str], rates: Mapping[str, float]) -> None:
        """A classic histogram whose bucket `le` grows by `rates[le]` per second
        (cumulative counts: pass rising rates, "+Inf" last) plus _count and _sum."""
        series: list[tuple[Mapping[str, str], Sequence[tuple[float, int]]]] = []
        times = span_ms()
        for le, slope in rates.items():
            series.append(({**labels, "__name__": f"{name}_bucket", "le": le},
                           [(slope * i, t) for i, t in enumerate(times)]))  # fmt: skip
        total = rates["+Inf"]
        series.append(({**labels, "__name__": f"{name}_count"},
                       [(total * i, t) for i, t in enumerate(times)]))  # fmt: skip
        series.append(({**labels, "__name__": f"{name}_sum"},
                       [(total * 0.01 * i, t) for i, t in enumerate(times)]))  # fmt: skip
        self.write(series)


def span_ms() -> list[int]:
    now = int(time.time())
    return [(now + s) * 1000 for s in range(-PAST_S, AHEAD_S + 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(d: Path, *flags: str, config: str = "global: {scrape_interval: 15s}\n") -> Iterator[Prom]:
    """A Prometheus with the remote-write receiver on a free port, stopped afterwards."""
    from berth_dev.prometheus import find_binary

    (d / "prometheus.yml").write_text(config)
    port = free_port()
    proc = subprocess.Popen(
        [find_binary(), f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver",
         "--log.level=warn", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)
    try:
        yield Prom(url, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
