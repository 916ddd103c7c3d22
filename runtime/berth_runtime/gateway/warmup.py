"""Probing starting pods while requests are held (as Knative's activator does).

At zero replicas a held request waits for the model's first pod. Kubernetes reports that
pod ready only after its next readiness probe (up to a period later), the kubelet's status
write and the EndpointSlice controller's update: most of a second that the request would
spend waiting on a runtime that already answers. So while a model has held requests, the
gateway asks the pods that are still starting (in the EndpointSlice, neither ready nor
terminating) itself, with the same GET the pods' probes use, and sends the held requests
to the first one that answers 200. The Kubernetes view takes over again as soon as it
shows the pod ready, or drops the pod when it goes away.

`with_warm` and `prune` are pure; `probe` is one GET on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import replace

from berth_runtime.gateway import routing

READY_PATH = "/v2/health/ready"  # what the runtime's readiness and startup probes GET
Key = tuple[str, str]  # (namespace, ModelDeployment name)


def prune(warm: Mapping[Key, frozenset[str]], table: routing.Table) -> dict[Key, frozenset[str]]:
    """The probed addresses still worth keeping: those the table still lists as starting
    (not ready yet in Kubernetes' view, and not terminating) for a model with no ready
    endpoint. Ready in the table, terminating, gone: the table's view wins."""
    out: dict[Key, frozenset[str]] = {}
    if not warm:  # the common case: every table change passes here
        return out
    for route in table.routes.values():
        key = (route.model.namespace, route.model.name)
        addresses = warm.get(key)
        if not addresses or route.endpoints:
            continue
        kept = addresses & {e.address for e in route.starting}
        if kept:
            out[key] = frozenset(kept)
    return out


def with_warm(table: routing.Table, warm: Mapping[Key, frozenset[str]]) -> routing.Table:
    """The table with each model's probed-ready addresses as its endpoints, for models
    that have no ready endpoint yet (the stable track: a canary never starts a model)."""
    if not warm:
        return table
    routes = dict(table.routes)
    for served, route in table.routes.items():
        addresses = warm.get((route.model.namespace, route.model.name))
        if not addresses or route.endpoints:
            continue
        eps = tuple(routing.Endpoint(a) for a in sorted(addresses))
        # no ready endpoint at all: no ready canary either, so all of it goes to stable
        routes[served] = replace(route, endpoints=eps, stable=eps, canary_percent=0.0)
    return routing.Table(routes=routes)


async def probe(address: str, timeout: float) -> bool:
    """Whether the runtime at `address` ("host:port") answers its readiness GET with 200."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"GET {READY_PATH} HTTP/1.1\r\nHost: {address}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status = await reader.readline()
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    parts = status.split()
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"
