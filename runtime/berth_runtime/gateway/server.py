"""Run the gateway: discovery (Kubernetes watches) and the ASGI app under uvicorn, one loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import uvicorn

from berth_runtime.gateway.settings import GatewaySettings
from berth_runtime.headtimeout import HeadTimeoutProtocol

log = logging.getLogger("berth.gateway")


class _HeadHold:
    """The client connection's transport, as uvicorn's HTTP protocol sees it: a response
    head is held until the body's first write, and both go out in one write (one
    syscall, one TCP segment for a small answer) instead of two.

    uvicorn writes the head on `http.response.start` and the body on the next message;
    the proxy sends both in the same loop iteration when it has the whole body. A head
    still held at the end of that iteration (a streamed body that is not there yet, a
    HEAD request) is written then, so nothing waits longer than one iteration."""

    __slots__ = ("_flush_handle", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._transport.writelines((held, data))
        elif data.startswith(b"HTTP/") and data.endswith(b"\r\n\r\n"):
            self._held = data
            self._flush_handle = self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else: the real transport
        return getattr(self._transport, name)


LINGER_SECONDS = 2.0  # after a 431: input is read and dropped this long, then the close


class GatewayHttpProtocol(HeadTimeoutProtocol):
    """uvicorn's httptools protocol, bounded, writing each small response in one piece.

    Bounds (class attributes, set from the settings by `protocol()`):
    - the head deadline (`headtimeout.HeadTimeoutProtocol`): a connection must complete
      each request head within `head_timeout_s` of opening (a connection that sends
      nothing included) or of the request's first byte; else 408 and close;
    - the head size: more than `max_head_bytes` received before a head completes (request
      line and headers; httptools itself reads without limit) is answered 431, then the
      connection's input is dropped unread for LINGER_SECONDS (so that the client reads
      the answer instead of a reset) and the connection closed.
    """

    max_head_bytes: int = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # between a request's first byte (or the opening) and its head
        self._head_t0 = 0.0
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHold(transport, self.loop))  # type: ignore[arg-type]

    # The head deadline without a timer per request: `_arm` notes when the head began and
    # arms a timer only if none is pending; the timer, when it fires, answers 408 if that
    # head is still incomplete and late, re-arms for the rest if a later head is under way,
    # or ends. On a kept-alive connection that is one timer per deadline, not per request.
    def _arm(self) -> None:
        self._in_head = True
        self._head_t0 = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(
                self._head_t0 + self.head_timeout_s, self._head_check
            )

    def _disarm(self) -> None:
        self._in_head = False
        self._head_bytes = 0

    def _head_check(self) -> None:
        self._head_timer = None
        if not self._in_head:
            return
        left = self._head_t0 + self.head_timeout_s - self.loop.time()
        if left > 0:
            self._head_timer = self.loop.call_later(left, self._head_check)
            return
        self._in_head = False
        self._head_expired()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not (self._in_head or self._refused):  # body bytes, or a pipelined request
            super().data_received(data)
            return
        if self._refused:
            return  # lingering after a 431: dropped unread
        self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes:
            self._refuse_head()

    def _refuse_head(self) -> None:
        self._disarm()
        self._refused = True
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # (else: an answer is being written)
            body = json.dumps({"error": f"request head over {self.max_head_bytes} bytes "
                               "(request line and headers)"}).encode()  # fmt: skip
            transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
            transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, transport.close)


def protocol(settings: GatewaySettings) -> type[GatewayHttpProtocol]:
    """The protocol class for uvicorn.Config(http=...), with the settings' bounds."""
    return type("GatewayHttpProtocol", (GatewayHttpProtocol,), {
        "head_timeout_s": settings.head_timeout_seconds,
        "max_head_bytes": settings.max_head_bytes,
    })  # fmt: skip


async def run(settings: GatewaySettings) -> None:
    from lightkube import AsyncClient

    from berth_runtime.gateway import routing
    from berth_runtime.gateway.discovery import Discovery
    from berth_runtime.gateway.proxy import Gateway
    from berth_runtime.gateway.wake import Waker

    kube: AsyncClient | None = None
    discovery: Discovery | None = None
    if settings.static:  # no Kubernetes: fixed routes (checked by the CLI)
        gateway = Gateway(settings)
        gateway.set_table(routing.static_table(settings.static))
    else:
        kube = AsyncClient(field_manager="berth-gateway")
        gateway = Gateway(settings, wake=Waker(kube).wake)
        discovery = Discovery(kube, settings.namespace_list(), gateway.set_table)
        gateway.is_ready = discovery.ready.is_set
        discovery.start()
    config = uvicorn.Config(
        gateway,
        host=settings.host,
        port=settings.port,
        loop="none",
        http=protocol(settings),
        # the peer address is the client: the proxy sets X-Forwarded-For from it (and trusts
        # client copies only with BERTH_GATEWAY_TRUST_FORWARDED)
        proxy_headers=False,
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=30,
        timeout_keep_alive=settings.client_keepalive_seconds,
        backlog=4096,
        # connections (and requests) at once; more: 503 (uvicorn's limit)
        limit_concurrency=settings.max_connections,
        server_header=False,
    )
    server = uvicorn.Server(config)
    log.info(
        "gateway on %s:%d, watching %s, unprefixed paths resolve in %r",
        settings.host, settings.port,
        f"static routes {settings.static}" if settings.static
        else settings.namespaces or "every namespace",
        settings.default_namespace,
    )  # fmt: skip
    try:
        await server.serve()
    finally:
        if discovery is not None:
            await discovery.stop()
        if kube is not None:
            await kube.close()


def serve(settings: GatewaySettings) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is locked with uvicorn[standard]
        pass
    asyncio.run(run(settings))
    return 0
