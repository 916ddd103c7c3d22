"""Run the gateway: discovery (Kubernetes watches) and the ASGI app under uvicorn, one loop."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from berth_runtime.gateway.settings import GatewaySettings

log = logging.getLogger("berth.gateway")


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
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=30,
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
