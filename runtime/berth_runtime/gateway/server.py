"""Run the gateway: discovery (Kubernetes watches) and the ASGI app under uvicorn, one loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from berth_runtime.gateway.settings import GatewaySettings

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


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing each small response in one piece."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHold(transport, self.loop))  # type: ignore[arg-type]


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
        http=GatewayHttpProtocol,
        # nothing here reads the client address; the middleware would cost a call per request
        proxy_headers=False,
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=30,
        timeout_keep_alive=settings.client_keepalive_seconds,
        backlog=4096,
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
