"""The outermost ASGI layer: auth, metrics, and a fast path for the inference routes.

Pure ASGI (not BaseHTTPMiddleware) because it sits on every request's hot path.

- Auth: probes (``/v2/health/*``), ``/metrics`` and ``/startup`` stay open so kubelet,
  Prometheus and the operator need no token; every other route needs
  ``Authorization: Bearer <token>`` when one is set.
- Metrics: every answered request is counted and timed; inference routes move the
  in-flight gauge.
- Bounds: at most ``--max-concurrent`` requests are handled at once (probes and
  ``/metrics`` aside; 503 with Retry-After above it); bodies count against a global
  in-flight byte budget (``--max-inflight-bytes``; 429 with Retry-After) from the moment
  their declared length is known until the response is sent; a whole body must arrive
  within ``--body-timeout-s`` and the request's deadline (408), and the deadline counts
  from arrival (:data:`berth_runtime.batcher.ARRIVAL`); a body's Content-Type, when
  given, must be JSON or ``application/octet-stream`` (415). tritonclient sends none.
- Fast path: the exact paths of the served model's inference routes and the health probes
  are dispatched from a dict to the same handlers the FastAPI routes use, skipping
  FastAPI's router and dependency solving (most of the per-request cost for small models).
  Everything else, including unknown model names, goes through FastAPI as usual.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth_runtime import routes_openai, routes_v1, routes_v2
from berth_runtime.batcher import ARRIVAL
from berth_runtime.body import JSON, Reply, byte_count
from berth_runtime.errors import (
    BerthError,
    Busy,
    InternalError,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    UnsupportedMediaType,
    error_body,
    protocol_of,
)
from berth_runtime.state import RuntimeState

log = logging.getLogger("berth.http")

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics", "/startup"})
BODY_TYPES = (b"application/json", b"application/octet-stream")
FastHandler = Callable[[bytes, "str | None"], Awaitable[Reply]]


def _model_label(path: str, served: str) -> str:
    """The model a path names: the served name, 'unknown' for another name, '' for none."""
    for prefix in ("/v2/models/", "/v1/models/"):
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            name = rest.split("/", 1)[0].split(":", 1)[0]
            return served if name == served else "unknown"
    if path in OPENAI_INFERENCE:
        return served
    return ""


OPENAI_INFERENCE = frozenset({"/v1/embeddings", "/v1/chat/completions", "/v1/completions"})


def _is_inference(path: str) -> bool:
    return path.endswith(("/infer", ":predict")) or path in OPENAI_INFERENCE


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
        self.token = state.token.encode() if state.token is not None else None
        s = state.settings
        self.limit = s.max_body_bytes
        self.fast = fast_routes(state)
        self.max_concurrent = s.max_concurrent
        self.active = 0
        self.budget = s.max_inflight_bytes
        self.inflight_bytes = 0
        self.body_timeout_s = s.body_timeout_s
        self.timeout_s = s.timeout_ms / 1000.0

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
        ARRIVAL.set(started)
        model = _model_label(path, self.state.name)
        open_path = path in OPEN_PATHS
        if self.token is not None and not open_path and not self._authorized(scope):
            code = await _send_error(send, protocol, Unauthorized())
            self.metrics.observe(model, protocol, code, time.perf_counter() - started)
            return
        if not open_path and self.active >= self.max_concurrent:
            busy = Busy(
                f"{self.active} requests are being handled, the most this server takes at once "
                "(--max-concurrent / BERTH_MAX_CONCURRENT); retry later"
            )
            code = await _send_error(send, protocol, busy)
            self.metrics.observe(model, protocol, code, time.perf_counter() - started)
            return
        counted = _is_inference(path) and model != "unknown"  # a 404 is no demand
        if counted:
            self.inflight.inc()
        if not open_path:
            self.active += 1
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
            if not open_path:
                self.active -= 1
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
        media_type: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
            elif key == b"inference-header-content-length":
                header_length = value.decode("latin-1")
            elif key == b"content-type":
                media_type = value
        held = [0]  # bytes this request holds in the in-flight budget, until it is answered
        try:
            return await self._answer(
                handler,
                reads_body,
                scope,
                receive,
                send,
                protocol,
                declared,
                media_type,
                header_length,
                held,
            )
        finally:
            self.inflight_bytes -= held[0]

    async def _answer(
        self,
        handler: FastHandler,
        reads_body: bool,
        scope: Scope,
        receive: Receive,
        send: Send,
        protocol: str,
        declared: bytes | None,
        media_type: bytes | None,
        header_length: str | None,
        held: list[int],
    ) -> int:
        try:
            body = b""
            if reads_body:
                _check_media_type(media_type)
                if declared is not None:
                    length = byte_count(declared, "Content-Length")
                    if length > self.limit:
                        raise PayloadTooLarge(
                            f"request body of {length} bytes exceeds the limit of "
                            f"{self.limit} bytes (--max-body-bytes)"
                        )
                    self._reserve(held, length)
                body = await self._read(receive, held)
            content, media, extra = await handler(body, header_length)
        except BerthError as err:
            return await _send_error(send, protocol, err)
        except Exception:
            crash = InternalError()
            log.exception("internal error %s on %s", crash.error_id, scope["path"])
            return await _send_error(send, protocol, crash)
        await _send(send, 200, content, media, extra)
        return 200

    def _reserve(self, held: list[int], more: int) -> None:
        """Take ``more`` bytes of the global budget for this request, or 429."""
        if self.inflight_bytes + more > self.budget:
            raise Overloaded(
                f"requests in flight hold {self.inflight_bytes} bytes; this one would pass the "
                f"budget of {self.budget} bytes (--max-inflight-bytes); retry later"
            )
        self.inflight_bytes += more
        held[0] += more

    async def _read(self, receive: Receive, held: list[int]) -> bytes:
        """The whole body within the body timeout and the request's deadline (408)."""
        arrival = ARRIVAL.get() or time.perf_counter()
        left = min(self.body_timeout_s, self.timeout_s - (time.perf_counter() - arrival))
        try:
            async with asyncio.timeout(max(left, 0.001)):
                return await self._read_all(receive, held)
        except TimeoutError:
            raise RequestTimeout(
                f"request body did not arrive within {max(left, 0):.1f} s "
                "(--body-timeout-s / the request deadline)"
            ) from None

    async def _read_all(self, receive: Receive, held: list[int]) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BerthError("client disconnected")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(
                    f"request body exceeds the limit of {self.limit} bytes (--max-body-bytes)"
                )
            if size > held[0]:  # no (or a lying) Content-Length: reserve as it arrives
                self._reserve(held, size - held[0])
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _check_media_type(value: bytes | None) -> None:
    """No Content-Type (tritonclient, raw clients) is fine; otherwise JSON or binary tensors."""
    if value is None:
        return
    media = value.split(b";", 1)[0].strip().lower()
    if media in BODY_TYPES or (media.startswith(b"application/") and media.endswith(b"+json")):
        return
    raise UnsupportedMediaType(
        f"Content-Type {value.decode('latin-1')!r} is not supported; send application/json, "
        "or application/octet-stream with Inference-Header-Content-Length for binary tensors"
    )
