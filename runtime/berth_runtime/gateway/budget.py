"""One budget for the whole gateway: requests at once, and bytes it keeps in memory.

Per-model hold caps (holding.py) bound one model; this bounds their sum and everything
else the gateway buffers: request bodies read whole (OpenAI bodies, held bodies) and
responses buffered whole before they are relayed. A request that would exceed it is
refused at once with 503 and Retry-After (`Busy`), before it holds anything. Plain
counters, no lock: the gateway is one event loop.
"""

from __future__ import annotations

from berth_runtime.errors import Busy


class Budget:
    def __init__(self, max_requests: int, max_bytes: int, retry_after_s: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.retry_after_s = retry_after_s
        self.requests = 0
        self.bytes = 0

    def enter(self) -> None:
        """A request begins; Busy when the gateway already has max_requests."""
        if self.requests >= self.max_requests:
            raise Busy(
                f"the gateway is at its limit of {self.max_requests} requests at once; retry",
                retry_after_s=self.retry_after_s,
            )
        self.requests += 1

    def leave(self) -> None:
        self.requests -= 1

    def take(self, nbytes: int) -> None:
        """Keep `nbytes` more in memory; Busy (nothing taken) when the budget is spent."""
        if self.bytes + nbytes > self.max_bytes:
            raise Busy(
                f"the gateway holds {self.bytes} bytes of requests and responses in memory "
                f"(limit {self.max_bytes}); retry",
                retry_after_s=self.retry_after_s,
            )
        self.bytes += nbytes

    def give(self, nbytes: int) -> None:
        self.bytes -= nbytes
