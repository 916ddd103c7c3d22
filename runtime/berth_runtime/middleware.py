"""The outermost ASGI layer: auth, metrics, and a fast path for the inference routes.

Pure ASGI (not BaseHTTPMiddleware) because it sits on every request's hot path.

- Auth: probes (``/v2/health/*``) and ``/metrics`` stay open so kubelet and Prometheus need
  no token; every other route needs ``Authorization: Bearer <token>`` when one is set.
- Metrics: every answered request is counted and timed; inference routes move the
  in-flight gauge.
- Fast path: the exact paths of the served model's inference routes and the health probes
  are dispatched from a dict to the same handlers the FastAPI routes use, skipping
  FastAPI's router and dependency solving (most of the per-request cost for small models).
  Everything else, including unknown model names, goes through FastAPI as usual.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth_runtime import routes_openai, routes_v1, routes_v2
from berth_runtime.body import JSON, Reply
from berth_runtime.errors import (
    BerthError,
    InternalError,
    NotReady,
    PayloadTooLarge,
    Unauthorized,
    error_body,
    protocol_of,
)
from berth_runtime.state import RuntimeState

log = logging.getLogger("berth.http")

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
FastHandler = Callable[[bytes, "str | None"], Awaitable[Reply]]


def _model_label(path: str, served: str) -> str:
    """The model a path names: the served name, 'unknown' for another name, '' for none."""
    for prefix in ("/v2/models/", "/v1/models/"):
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            name = rest.split("/", 1)[0].split(":", 1)[0]
            return served if name == served else "unknown"
    if path == "/v1/embeddings":
        return served
    return ""


def _is_inference(path: str) -> bool:
    return path.endswith(("/infer", ":predict")) or path == "/v1/embeddings"


def fast_routes(state: RuntimeState) -> dict[tuple[str, str], tuple[FastHandler, bool]]:
    """(method, exact path) -> (handler, reads body)."""
    name = state.name

    async def infer(body: bytes, header_length: str | None) -> Reply:
        return await routes_v2.infer_reply(state, name, body, header_length)

    async def predict(body: bytes, _: str | None) -> Reply:
        return await routes_v1.predict_reply(state, name, body)

    async def embeddings(body: bytes, _: str | None) -> Reply:
        return await routes_openai.embeddings_reply(state, body)

    async def live(_: bytes, __: str | None) -> Reply:
        return b'{"live":true}', JSON, None

    async def ready(_: bytes, __: str | None) -> Reply:
        if not state.ready:
            raise NotReady("shutting down" if state.draining else "model is still loading")
        return b'{"ready":true}', JSON, None

    return {
        ("POST", f"/v2/models/{name}/infer"): (infer, True),
        ("POST", f"/v1/models/{name}:predict"): (predict, True),
        ("POST", "/v1/embeddings"): (embeddings, True),
        ("GET", "/v2/health/live"): (live, False),
        ("GET", "/v2/health/ready"): (ready, False),
    }


async def _send(
    send: Send, status: int, body: bytes, media: str, extra: dict[str, str] | None = None
) -> None:
    headers = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())]
    if extra:
        headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, protocol: str, err: BerthError) -> int:
    await _send(send, err.status, orjson.dumps(error_body(protocol, err)), JSON, err.headers)
    return err.status


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, state: RuntimeState) -> None:
        self.app = app
        self.state = state
        self.metrics = state.metrics
        self.inflight = state.metrics.model_metrics.inflight
        self.token = state.token.encode() if state.token else None
        self.limit = state.settings.max_body_bytes
        self.fast = fast_routes(state)

    def _authorized(self, scope: Scope) -> bool:
        assert self.token is not None
        for key, value in scope["headers"]:
            if key == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    given.strip(), self.token
                )
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
            code = await _send_error(send, protocol, Unauthorized())
            self.metrics.observe(model, protocol, code, time.perf_counter() - started)
            return
        counted = _is_inference(path)
        if counted:
            self.inflight.inc()
        status: list[int] = [500]
        try:
            fast = self.fast.get((scope["method"], path))
            if fast is not None:
                status[0] = await self._fast(fast, scope, receive, send, protocol)
            else:

                async def send_status(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        status[0] = message["status"]
                    await send(message)

                await self.app(scope, receive, send_status)
        finally:
            if counted:
                self.inflight.dec()
            self.metrics.observe(model, protocol, status[0], time.perf_counter() - started)

    async def _fast(
        self,
        route: tuple[FastHandler, bool],
        scope: Scope,
        receive: Receive,
        send: Send,
        protocol: str,
    ) -> int:
        handler, reads_body = route
        header_length: str | None = None
        declared: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
            elif key == b"inference-header-content-length":
                header_length = value.decode("latin-1")
        try:
            body = b""
            if reads_body:
                if declared is not None and declared.isdigit() and int(declared) > self.limit:
                    raise PayloadTooLarge(
                        f"request body of {int(declared)} bytes exceeds the limit of {self.limit} bytes"
                    )
                body = await self._read(receive)
            content, media, extra = await handler(body, header_length)
        except BerthError as err:
            return await _send_error(send, protocol, err)
        except Exception:
            crash = InternalError()
            log.exception("internal error %s on %s", crash.error_id, scope["path"])
            return await _send_error(send, protocol, crash)
        await _send(send, 200, content, media, extra)
        return 200

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BerthError("client disconnected")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {self.limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
