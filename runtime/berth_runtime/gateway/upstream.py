"""A lean HTTP/1.1 client for the gateway's hops to model pods: pooled keep-alive
connections per endpoint, request and response bodies streamed, and an exact answer to
"did the request leave the gateway?" (which decides whether a retry is safe).

Why not httpx: measured in this repository, httpx + httpcore (through anyio) cost about
3 ms of CPU per proxied request on this machine, ten times the whole budget; this client
is an asyncio.Protocol with httptools' response parser (both already under uvicorn).

Errors:
  ConnectFailed   the connection could not be opened (refused, unreachable, timeout):
                  the model never saw the request; safe to retry elsewhere.
  NotSent         the connection broke while the request was being written (reset): the
                  model cannot have a whole request; safe to retry if the body is replayable.
  UpstreamError   anything after the request was written: never retried.

HTTP framing (RFC 9110/9112), the parts a proxy gets wrong:
- 1xx interim responses (100 Continue, 103 Early Hints) are read and skipped: the response
  is the first final (2xx-5xx) one. 101 is refused (the gateway never asks to upgrade).
- A connection goes back to the pool only when its response ended cleanly, nothing else
  began on it (a second message, stray bytes: `stray`), and it is still open; one that
  receives bytes while idle is closed when next taken.
- Bounded: a response head over MAX_HEAD bytes fails the response (502); a streamed body
  buffers at most HIGH_WATER bytes (plus one socket read) before the socket stops being read.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import cast

import httptools

IDLE_SECONDS = 4.0  # below uvicorn's 5 s keep-alive timeout: we drop a connection first
HIGH_WATER = 128 * 1024  # response body bytes buffered before the socket stops being read
MAX_HEAD = 64 * 1024  # bytes of a response head (interim ones included); more: 502


class UpstreamError(Exception):
    pass


class ConnectFailed(UpstreamError):
    pass


class NotSent(UpstreamError):
    pass


class _Conn(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        # one parser per connection: it reads keep-alive responses one after the other (a
        # connection whose response failed or was cut short is closed, never reused)
        self.parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future[None] = self.loop.create_future()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.more: asyncio.Future[None] | None = None
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.got_bytes = False
        self.paused_reading = False
        self.buffered = 0  # body bytes in `chunks`
        self.final = False  # the final (non-1xx) head arrived
        self.interim = False  # the message being parsed is a 1xx
        self.stray = False  # a message began after this response: never reuse
        self.head_bytes = 0  # bytes received before the final head completed
        self.connection: bytes | None = None  # the response's Connection field(s)
        self.chunked = False  # the response has a Transfer-Encoding
        self.length = -1  # the response's content-length; -1: none (chunked or to close)

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.error is None:
                self._fail(UpstreamError(f"bad response from the model: {exc!r}"))
            self.close()
            return
        if not self.final:  # (checked after the feed: one read may carry head and body)
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD:
                self._fail(UpstreamError(f"response head over {MAX_HEAD} bytes"))
                self.close()

    def eof_received(self) -> bool | None:
        self.closed = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            why = exc or ConnectionResetError("the model closed the connection")
            self._fail(UpstreamError(f"connection lost: {why!r}"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(NotSent(f"connection lost while sending: {exc!r}"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete or self.final:  # a second message: not ours, the connection is spoilt
            self.stray = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.stray or self.interim:
            return
        name = name.lower()  # once, here: the proxy filters on lower-case names
        if name == b"content-length" and value.isdigit():
            self.length = int(value)
        elif name == b"connection":  # the fields it names are hop-by-hop (proxy.py)
            self.connection = value if self.connection is None else self.connection + b"," + value
        elif name == b"transfer-encoding":
            self.chunked = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.stray:
            return
        status = self.parser.get_status_code()
        if status < 200:
            # an interim response (RFC 9110 15.2): skip it and read on; its headers are
            # dropped. 101 would switch protocols, which the gateway never asked for.
            self.headers.clear()
            self.length = -1
            self.connection = None
            self.chunked = False
            if status == 101:
                self._fail(UpstreamError("the model switched protocols (101) unasked"))
                self.close()
            else:
                self.interim = True
            return
        self.final = True
        self.status = status
        if self.chunked and self.length >= 0:  # the body is framed by its chunks: no length
            self.length = -1
            self.headers = [kv for kv in self.headers if kv[0] != b"content-length"]
        self.keep_alive = self.parser.should_keep_alive()  # (the parser forgets it later)
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.stray:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered >= HIGH_WATER and self.transport and not self.paused_reading:
            self.paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:  # the 1xx ended: the next message is the real response
            self.interim = False
            return
        if self.stray:
            return
        self.complete = True
        self._wake()

    # -- helpers ------------------------------------------------------------------------
    def _wake(self) -> None:
        if self.more is not None and not self.more.done():
            self.more.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # retrieved: no "never retrieved" warning if unused
        self._wake()

    def timed_out(self, seconds: float) -> None:
        self._fail(UpstreamError(f"no response head within {seconds:g} s"))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise NotSent("the connection closed before the request was written")
        self.transport.write(data)
        if self._write_paused:
            self._drain = self.loop.create_future()
            await self._drain

    async def read(self) -> bytes:
        """The next body chunk; b"" at the end of the body. (A plain coroutine, not an
        async generator: those cost a registration with the loop per response.)"""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.paused_reading and self.buffered < HIGH_WATER // 2 and self.transport:
                    self.paused_reading = False
                    self.transport.resume_reading()
                if chunk:
                    return chunk
                continue
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            self.more = self.loop.create_future()
            await self.more
            self.more = None

    async def read_all(self) -> bytes:
        """The whole remaining body (for small bodies of known length)."""
        while not self.complete:
            if self.error is not None:
                raise self.error
            if self.paused_reading and self.transport:  # all of it is wanted: keep reading
                self.paused_reading = False
                self.transport.resume_reading()
            self.more = self.loop.create_future()
            await self.more
            self.more = None
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return data


class Response:
    """A response whose head arrived; iterate `body()`, then `release()` (always)."""

    def __init__(self, pool: Pool, address: str, conn: _Conn, head_only: bool) -> None:
        self.pool = pool
        self.address = address
        self.conn = conn
        self.status = conn.status
        self.headers = conn.headers
        self.head_only = head_only

    async def read(self) -> bytes:
        """The next body chunk, b"" at the end."""
        return b"" if self.head_only else await self.conn.read()

    async def read_all(self) -> bytes:
        return b"" if self.head_only else await self.conn.read_all()

    async def body(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk (for callers that want an iterator)."""
        while chunk := await self.read():
            yield chunk

    def release(self) -> None:
        conn = self.conn
        reusable = (
            conn.complete
            and not self.head_only
            and not conn.closed
            and conn.keep_alive
            and conn.error is None
            and not conn.stray
        )
        idle = self.pool.idle.setdefault(self.address, [])
        if reusable and len(idle) < self.pool.max_idle:
            conn._reset()
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.close()


class Pool:
    """Keep-alive connections per endpoint address ("host:port")."""

    def __init__(self, connect_timeout: float, read_timeout: float, max_idle: int) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout or None
        self.max_idle = max_idle
        self.idle: dict[str, list[_Conn]] = {}

    async def _connect(self, address: str) -> _Conn:
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(loop), host.strip("[]"), int(port)),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"connecting to {address}: {exc!r}") from None
        return conn

    def _take(self, address: str) -> _Conn | None:
        conns = self.idle.get(address)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if conn.closed or conn.got_bytes or now - conn.idle_since > IDLE_SECONDS:
                conn.close()
                continue
            return conn
        return None

    async def request(
        self,
        address: str,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes],
    ) -> Response:
        """Send one request; return once the response head arrived."""
        conn = self._take(address) or await self._connect(address)
        head = [f"{method} {target} HTTP/1.1\r\nhost: {address}\r\n".encode("latin-1")]
        head += [k + b": " + v + b"\r\n" for k, v in headers]
        try:
            if isinstance(body, bytes):
                if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
                    head.append(b"content-length: " + str(len(body)).encode() + b"\r\n")
                await conn.write(b"".join(head) + b"\r\n" + body)
            else:
                chunked = not any(k == b"content-length" for k, _ in headers)
                if chunked:
                    head.append(b"transfer-encoding: chunked\r\n")
                await conn.write(b"".join(head) + b"\r\n")
                async for chunk in body:
                    if chunked:
                        chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
                    await conn.write(chunk)
                if chunked:
                    await conn.write(b"0\r\n\r\n")
        except NotSent:
            conn.close()
            raise
        except BaseException:
            conn.close()
            raise
        timer = None
        if self.read_timeout is not None:
            timer = conn.loop.call_later(self.read_timeout, conn.timed_out, self.read_timeout)
        try:
            await conn.head
        except BaseException:
            conn.close()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return Response(self, address, conn, head_only=method == "HEAD")

    def retain(self, addresses: set[str]) -> None:
        """Close idle connections to endpoints no longer routed to."""
        for address in [a for a in self.idle if a not in addresses]:
            for conn in self.idle.pop(address):
                conn.close()

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle.clear()
