"""One pure ASGI middleware: bearer-token check, in-flight gauge, request metrics.

Pure ASGI (not BaseHTTPMiddleware) because it sits on every request's hot path.
Probes (``/v2/health/*``) and ``/metrics`` stay open so kubelet and Prometheus need no
token; every other route needs ``Authorization: Bearer <token>`` when a token is set.
"""

from __future__ import annotations

import hmac
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth_runtime.errors import Unauthorized, error_body, protocol_of
from berth_runtime.state import RuntimeState

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})


def _model_label(path: str, served: str) -> str:
    """The model a path names: the served name, 'unknown' for another name, '' for none."""
    for prefix in ("/v2/models/", "/v1/models/"):
        if path.startswith(prefix):
            rest = path[len(prefix):]
            name = rest.split("/", 1)[0].split(":", 1)[0]
            return served if name == served else "unknown"
    if path == "/v1/embeddings":
        return served
    return ""


def _is_inference(path: str) -> bool:
    return path.endswith(("/infer", ":predict")) or path == "/v1/embeddings"


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, state: RuntimeState) -> None:
        self.app = app
        self.state = state
        self.metrics = state.metrics
        self.inflight = state.metrics.model_metrics.inflight
        self.token = state.token.encode() if state.token else None

    async def _deny(self, send: Send, protocol: str) -> None:
        err = Unauthorized()
        body = orjson.dumps(error_body(protocol, err))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, scope: Scope) -> bool:
        assert self.token is not None
        for key, value in scope["headers"]:
            if key == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        protocol = protocol_of(path)
        started = time.perf_counter()
        model = _model_label(path, self.state.name)
        if self.token is not None and path not in OPEN_PATHS and not self._authorized(scope):
            await self._deny(send, protocol)
            self.metrics.observe(model, protocol, 401, time.perf_counter() - started)
            return
        status: list[int] = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        counted = _is_inference(path)
        if counted:
            self.inflight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            if counted:
                self.inflight.dec()
            self.metrics.observe(model, protocol, status[0], time.perf_counter() - started)
