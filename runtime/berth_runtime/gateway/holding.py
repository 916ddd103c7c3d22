"""Requests held while a model has no ready endpoint: bounded per model, woken together.

One `Hold` per model and cold start ("episode"): it counts the requests and bytes it
holds, remembers when the first arrived, and is set (an asyncio.Event) when the table
shows a ready endpoint, or when the model is gone. The caps and the deadline are the
gateway's settings; per model, `routing.hold_limits` gives the deadline (the model's own,
else its ScalingPolicy's as the operator publishes it) and the policy's caps, which can
only lower the gateway's (its memory bound): `caps()`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from berth_runtime.gateway import routing

Key = tuple[str, str]  # (namespace, ModelDeployment name)


@dataclass
class Hold:
    key: Key
    since: float = field(default_factory=time.monotonic)
    count: int = 0
    bytes: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False
    woke_at: float | None = None  # when this episode last patched /scale


class Overflow(Exception):
    """The model's hold is at its cap (requests or bytes)."""


def caps(model: routing.ModelInfo, max_requests: int, max_bytes: int) -> tuple[int, int]:
    """A model's caps: the gateway's, lowered (never raised) by its policy's."""
    return (
        min(max_requests, model.hold_max_requests or max_requests),
        min(max_bytes, model.hold_max_bytes or max_bytes),
    )


class Holds:
    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.holds: dict[Key, Hold] = {}
        self.caps: dict[Key, tuple[int, int]] = {}  # models whose policy lowers the caps

    def admit(self, key: Key, nbytes: int) -> Hold:
        max_requests, max_bytes = self.caps.get(key, (self.max_requests, self.max_bytes))
        hold = self.holds.get(key)
        if hold is None or hold.ready.is_set():
            hold = self.holds[key] = Hold(key)
        if hold.count + 1 > max_requests:
            raise Overflow(f"{hold.count} requests are already held (cap {max_requests})")
        if hold.bytes + nbytes > max_bytes:
            raise Overflow(f"{hold.bytes} body bytes are already held (cap {max_bytes})")
        hold.count += 1
        hold.bytes += nbytes
        return hold

    def release(self, hold: Hold, nbytes: int) -> None:
        hold.count -= 1
        hold.bytes -= nbytes
        if hold.count == 0 and self.holds.get(hold.key) is hold and hold.ready.is_set():
            del self.holds[hold.key]

    def update(self, table: routing.Table) -> list[Hold]:
        """Wake the holds whose model has an endpoint now (or is gone); return the holds
        still waiting on a model that is at zero replicas (to be woken again)."""
        by_key = {(r.model.namespace, r.model.name): r for r in table.routes.values()}
        self.caps = {
            key: caps(r.model, self.max_requests, self.max_bytes)
            for key, r in by_key.items()
            if r.model.hold_max_requests or r.model.hold_max_bytes
        }
        cold = []
        for key, hold in list(self.holds.items()):
            route = by_key.get(key)
            if route is None:
                hold.gone = True
                hold.ready.set()
            elif route.endpoints:
                hold.ready.set()
            elif route.model.replicas == 0 and hold.count > 0:
                cold.append(hold)
            if hold.ready.is_set() and hold.count == 0:
                del self.holds[key]
        return cold
