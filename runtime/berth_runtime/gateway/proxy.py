"""The gateway's ASGI app: route by model name, balance, hold at zero, stream both ways.

Raw ASGI (no framework routing per request) with a lean pooled HTTP/1.1 client
(`upstream.py`): keep-alive connections to every endpoint are reused. Request bodies stream to the model, except
where the gateway must read them whole: the OpenAI routes (the model is named inside the
JSON) and held requests (they wait in memory, within the hold caps). Responses always
stream, chunk by chunk (server-sent events included).

Errors use the runtime's classes and bodies (`berth_runtime.errors`), in each protocol's
shape. A request is retried once on another endpoint only when the first never reached
the model: the connection was refused (or timed out opening) or broke while the request
was being written, with a body the gateway still holds. Never after the model may have
seen it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import orjson
from prometheus_client import generate_latest

from berth_runtime.errors import (
    BadRequest,
    BerthError,
    ModelNotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    UpstreamFailed,
    error_body,
)
from berth_runtime.gateway import paths, routing, upstream, warmup
from berth_runtime.gateway.budget import Budget
from berth_runtime.gateway.holding import Hold, Holds, Overflow
from berth_runtime.gateway.metrics import GatewayMetrics, ModelKey
from berth_runtime.gateway.settings import GatewaySettings

log = logging.getLogger("berth.gateway")
_clock = time.perf_counter

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Wake = Callable[[routing.ModelInfo, int], Coroutine[Any, Any, bool]]

# hop-by-hop fields (RFC 9110 7.6.1), plus every field a Connection header names (both
# directions, `_connection_named`), plus Host (the upstream client writes its own)
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)
# request fields the gateway answers itself: `Expect: 100-continue` is answered by the
# gateway's own server when the body is read (forwarded, the model would send a 100 of its
# own); X-Forwarded-* and Forwarded are set by the gateway (`_request_headers`)
REQUEST_DROP = HOP_BY_HOP | {b"expect"}
# a body the gateway holds whole is sent with its own content-length
REQUEST_DROP_WHOLE = REQUEST_DROP | {b"content-length"}
# the gateway's own server writes Date: the model's is dropped (one Date per response)
RESPONSE_DROP = HOP_BY_HOP | {b"date"}
FORWARDED_FOR = b"x-forwarded-for"
FORWARDED_PROTO = b"x-forwarded-proto"
TARGET_PATH_MAX = 256  # longer paths are parsed each time, never cached (bounded memory)
# a response of known length up to this size is relayed as one message (one write to the
# client) once it is whole; longer ones, and those without a length (SSE), stream
WHOLE_BODY_MAX = 64 * 1024
COLD_HEADER = b"berth-cold-start"
TARGET_CACHE = 4096  # distinct request paths whose parse is kept (then the cache restarts)
PROBE_INTERVAL = 0.1  # seconds between readiness GETs of starting pods while requests wait
PROBE_TIMEOUT = 0.5  # seconds for one such GET
REWAKE_AFTER = 10.0  # seconds: a model still at zero with requests held is woken again


class ClientGone(Exception):
    """The client disconnected (while held, or while its body was read)."""


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        metrics: GatewayMetrics | None = None,
        wake: Wake | None = None,
        is_ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.registry = self.metrics.registry()
        self.wake_fn = wake
        self.is_ready = is_ready
        self.table = routing.Table()
        self.base = routing.Table()  # the table as discovery gave it (self.table adds warm)
        self.warm: dict[warmup.Key, frozenset[str]] = {}  # probed-ready starting endpoints
        self._probing: set[warmup.Key] = set()
        self.inflight: dict[str, int] = {}  # per endpoint address
        self.holds = Holds(settings.hold_max_requests, settings.hold_max_bytes)
        self.budget = Budget(
            settings.budget_max_requests, settings.budget_max_bytes, settings.retry_after_seconds
        )
        self.rng = random.Random()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._targets: dict[bytes, paths.Target] = {}  # parsed paths (pure, few distinct)
        self.pool = upstream.Pool(
            settings.connect_timeout, settings.read_timeout, settings.keepalive_per_endpoint
        )

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        self.pool.close()

    # -- the table ----------------------------------------------------------------------
    def set_table(self, table: routing.Table) -> None:
        """Kubernetes' view (discovery), plus the starting pods the gateway itself found
        ready while requests were held (warmup.py) until that view catches up."""
        self.base = table
        self.warm = warmup.prune(self.warm, table)
        table = warmup.with_warm(table, self.warm)
        self.table = table
        self.pool.retain({e.address for r in table.routes.values() for e in r.endpoints})
        for hold in self.holds.update(table):
            if hold.woke_at is not None and time.monotonic() - hold.woke_at >= REWAKE_AFTER:
                route = next(
                    (r for r in table.routes.values()
                     if (r.model.namespace, r.model.name) == hold.key),
                    None,
                )  # fmt: skip
                if route is not None:
                    self._wake(hold, route.model)

    def _wake(self, hold: Hold, model: routing.ModelInfo) -> None:
        hold.woke_at = time.monotonic()
        if self.wake_fn is None or not self.settings.wake:
            return
        key = (model.namespace, model.name, model.served)
        self.metrics.cold_start(key)
        task: asyncio.Task[bool] = asyncio.create_task(self.wake_fn(model, hold.count))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe_starting(self, hold: Hold) -> None:
        """While `hold` waits: GET the readiness of the model's starting pods every
        PROBE_INTERVAL; the first that answers 200 gets the held requests (warmup.py)."""
        try:
            while not hold.ready.is_set() and hold.count > 0:
                route = next((r for r in self.base.routes.values()
                              if (r.model.namespace, r.model.name) == hold.key), None)  # fmt: skip
                if route is not None and not route.endpoints and route.starting:
                    addresses = [e.address for e in route.starting]
                    answers = await asyncio.gather(
                        *(warmup.probe(a, PROBE_TIMEOUT) for a in addresses)
                    )
                    up = frozenset(a for a, ok in zip(addresses, answers, strict=True) if ok)
                    if up and not hold.ready.is_set():
                        log.info("%s/%s: %s answers ready before Kubernetes says so; "
                                 "held requests go there", *hold.key, ", ".join(sorted(up)))  # fmt: skip
                        self.warm[hold.key] = self.warm.get(hold.key, frozenset()) | up
                        self.set_table(self.base)
                        return
                await asyncio.sleep(PROBE_INTERVAL)
        finally:
            self._probing.discard(hold.key)

    # -- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        t0 = _clock()
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        target = self._targets.get(raw)
        if target is None:
            target = paths.parse(raw.decode("latin-1"))
            if len(raw) <= TARGET_PATH_MAX:
                if len(self._targets) >= TARGET_CACHE:
                    self._targets.clear()
                self._targets[raw] = target
        try:
            if target.kind == "own":
                await self._own(target.upstream_path, send)
                return
            if target.kind == "list":
                await self._json(send, 200, self._list(target.namespace))
                return
            if target.kind == "unknown":
                self.metrics.unrouted["no_route"] = self.metrics.unrouted.get("no_route", 0) + 1
                raise ModelNotFound(f"no route for {scope['method']} {_shown(raw)}")
            if target.kind == "bad":
                self.metrics.unrouted["bad_path"] = self.metrics.unrouted.get("bad_path", 0) + 1
                raise BadRequest(f"{target.error}: {_shown(raw)}")
            self.budget.enter()
            body: bytes | None = None
            try:
                name = target.model
                if target.kind == "body":
                    body = await self._read_body(scope, receive, self.settings.max_body_bytes)
                    name = _model_field(body)
                assert name is not None
                found = routing.resolve(
                    self.table, name, target.namespace, self.settings.default_namespace
                )
                if isinstance(found, routing.NotFound):
                    self.metrics.unrouted["unknown_model"] = (
                        self.metrics.unrouted.get("unknown_model", 0) + 1
                    )
                    raise ModelNotFound(found.message)
                await self._serve(scope, receive, send, target, found.route, body, t0)
            finally:
                self.budget.leave()
                if body is not None:
                    self.budget.give(len(body))
        except BerthError as err:
            await self._error(send, target.protocol, err)
        except ClientGone:
            return
        except Exception:
            # a defect, never the input's fault: the client still gets an answer in its
            # protocol's shape (unless the response had begun: then the server ends it)
            log.exception("gateway error on %s %s", scope.get("method"), _shown(raw))
            with contextlib.suppress(Exception):
                await self._error(send, target.protocol, BerthError("internal gateway error"))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- own routes ---------------------------------------------------------------------
    async def _own(self, path: str, send: Send) -> None:
        if path == "/metrics":
            data = generate_latest(self.registry)
            await _respond(send, 200, data, b"text/plain; version=0.0.4; charset=utf-8")
        elif path == "/v2/health/ready" and not self.is_ready():
            await self._json(send, 503, {"error": "the gateway has not listed its models yet"})
        else:
            await self._json(send, 200, {"live": True} if "live" in path else {"ready": True})

    def _list(self, namespace: str | None) -> dict[str, Any]:
        data = []
        for route in self.table.models():
            m = route.model
            if namespace is not None and m.namespace != namespace:
                continue
            data.append({"id": m.served, "object": "model", "created": 0, "owned_by": m.namespace,
                         "namespace": m.namespace, "path_prefix": f"/ns/{m.namespace}",
                         "ready": bool(route.endpoints)})  # fmt: skip
        return {"object": "list", "data": data}

    # -- serving one request ------------------------------------------------------------
    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: paths.Target,
        route: routing.Route,
        body: bytes | None,
        t0: float,
    ) -> None:
        model = route.model
        key: ModelKey = (model.namespace, model.name, model.served)
        if route.endpoints:
            code = await self._forward(scope, receive, send, target, route, body, None, key, t0)
            self.metrics.answered(key, code)
        elif body is not None:  # read whole already (the caller gives its bytes back)
            await self._serve_held(scope, receive, send, target, route, body, key, t0)
        else:
            # held: the body waits in memory, counted by the budget until the request ends
            body = await self._read_body(scope, receive, self.settings.max_body_bytes)
            try:
                await self._serve_held(scope, receive, send, target, route, body, key, t0)
            finally:
                self.budget.give(len(body))

    async def _serve_held(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: paths.Target,
        route: routing.Route,
        body: bytes,
        key: ModelKey,
        t0: float,
    ) -> None:
        route, waited = await self._hold(key, route, receive, len(body))
        code = await self._forward(scope, receive, send, target, route, body, waited, key, t0)
        self.metrics.answered(key, code)

    async def _hold(
        self, key: ModelKey, route: routing.Route, receive: Receive, nbytes: int
    ) -> tuple[routing.Route, float]:
        model = route.model
        hkey = (model.namespace, model.name)
        deadline = model.hold_seconds or self.settings.hold_seconds
        retry = self.settings.retry_after_seconds
        try:
            hold = self.holds.admit(hkey, nbytes)
        except Overflow as exc:
            self.metrics.answered(key, 429)
            raise Overloaded(
                f"model {model.served!r} is starting and its hold is full: {exc}",
                retry_after_s=retry,
            ) from None
        start = time.monotonic()
        self.metrics.add(self.metrics.held, key, 1)
        try:
            if hold.woke_at is None and model.replicas == 0:
                self._wake(hold, model)
            if self.settings.probe_starting and hkey not in self._probing:
                self._probing.add(hkey)
                self._spawn(self._probe_starting(hold))
            await _wait_or_disconnect(hold.ready, receive, deadline)
        except TimeoutError:
            self.metrics.answered(key, 503)
            since = time.monotonic() - hold.since
            raise NotReady(
                f"model {model.served!r} is starting (for {since:.0f} s, scaling up from zero); "
                f"no ready endpoint within the hold deadline of {deadline:g} s; retry",
                headers={"Retry-After": str(retry)},
            ) from None
        except ClientGone:
            self.metrics.answered(key, 499)
            raise
        finally:
            self.metrics.add(self.metrics.held, key, -1)
            self.holds.release(hold, nbytes)
        waited = time.monotonic() - start
        self.metrics.waited(key, waited)
        if hold.gone:
            self.metrics.answered(key, 404)
            raise ModelNotFound(f"model {model.served!r} was deleted while the request waited")
        fresh = routing.resolve(self.table, model.served, model.namespace, model.namespace)
        if isinstance(fresh, routing.NotFound) or not fresh.route.endpoints:
            self.metrics.answered(key, 503)
            raise NotReady(
                f"model {model.served!r} lost its endpoints while the request waited; retry",
                headers={"Retry-After": str(retry)},
            )
        return fresh.route, waited

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: paths.Target,
        route: routing.Route,
        body: bytes | None,
        waited: float | None,
        key: ModelKey,
        t0: float,
    ) -> int:
        first: dict[str, Any] = {}
        if body is None:
            # most bodies arrive in one message: then they are bytes (one write, replayable)
            first = await receive()
            if first["type"] == "http.disconnect":
                raise ClientGone()
            if not first.get("more_body", False):
                body = first.get("body", b"")
        drop = REQUEST_DROP if body is None else REQUEST_DROP_WHOLE
        headers = _request_headers(scope, drop, self.settings.trust_forwarded)
        path = _upstream_path(scope, target)
        started = [False]  # whether a streamed body began to be read (then no retry)
        tried: set[str] = set()
        self.metrics.add(self.metrics.in_flight, key, 1)
        # the canary split: one draw per request; a retry may go to either track
        track, endpoints = routing.choose_track(route, self.rng)
        if route.canary:
            self.metrics.routed(key, track)
        try:
            while True:
                ep = routing.pick(
                    endpoints if not tried else route.endpoints,
                    self.inflight,
                    exclude=frozenset(tried),
                    two_choices_above=self.settings.two_choices_above,
                    rng=self.rng,
                )
                if ep is None:
                    raise UpstreamFailed(
                        f"no endpoint of model {route.model.served!r} accepted the connection"
                    )
                tried.add(ep.address)
                content: bytes | AsyncIterator[bytes] = (
                    body if body is not None else _stream_body(first, receive, started)
                )
                self.inflight[ep.address] = self.inflight.get(ep.address, 0) + 1
                try:
                    t_out = _clock()
                    try:
                        response = await self.pool.request(
                            ep.address, scope["method"], path, headers, content
                        )
                    except (upstream.ConnectFailed, upstream.NotSent) as exc:
                        replayable = body is not None or not started[0]
                        if len(tried) < 2 and replayable:
                            log.info("%s: %s; retrying on another endpoint", ep.address, exc)
                            continue
                        raise UpstreamFailed(f"endpoint {ep.address}: {exc}") from None
                    except upstream.UpstreamError as exc:
                        raise UpstreamFailed(f"endpoint {ep.address}: {exc}") from None
                    try:
                        t_back = await self._relay(response, receive, send, waited)
                    finally:
                        response.release()
                    if t_back and waited is None:
                        self.metrics.overhead(key, _clock() - t_back + t_out - t0)
                    return response.status
                finally:
                    self.inflight[ep.address] -= 1
                    if not self.inflight[ep.address]:
                        del self.inflight[ep.address]
        except BerthError as err:
            self.metrics.answered(key, err.status)
            raise
        finally:
            self.metrics.add(self.metrics.in_flight, key, -1)

    async def _relay(
        self, response: upstream.Response, receive: Receive, send: Send, waited: float | None
    ) -> float:
        """Send the response on; return when its whole body was back from the model (the
        clock), or 0.0 for a streamed one."""
        # the upstream client lower-cased the names and noted the content-length
        out = [kv for kv in response.headers if kv[0] not in RESPONSE_DROP]
        if response.conn.connection is not None:
            named = _connection_named(response.conn.connection)
            out = [kv for kv in out if kv[0] not in named]
        if waited is not None:
            out.append((COLD_HEADER, f"{waited:.3f}".encode()))
        start = {"type": "http.response.start", "status": response.status, "headers": out}
        length = response.conn.length
        if response.head_only or 0 <= length <= WHOLE_BODY_MAX:
            # the common case, a small answer of known length: wait for all of it, then
            # one response message (the server writes head and body together)
            nbytes = max(length, 0)
            self.budget.take(nbytes)
            try:
                try:
                    data = await response.read_all()
                except upstream.UpstreamError as exc:
                    # nothing was sent to the client yet: a clean 502
                    raise UpstreamFailed(f"the response broke off: {exc}") from None
                t_back = _clock()
                await send(start)
                await send({"type": "http.response.body", "body": data, "more_body": False})
            finally:
                self.budget.give(nbytes)
            return t_back
        # a stream buffers up to upstream.HIGH_WATER (then the model's socket is not read)
        self.budget.take(upstream.HIGH_WATER)
        try:
            await self._stream(response, receive, send, start, length)
        finally:
            self.budget.give(upstream.HIGH_WATER)
        return 0.0

    async def _stream(
        self,
        response: upstream.Response,
        receive: Receive,
        send: Send,
        start: dict[str, Any],
        length: int,
    ) -> None:
        await send(start)
        # a stream (no length: SSE, a long generation) stops when its client leaves, so the
        # model stops working for nobody (the server's send() just drops data after that)
        watch = None
        if length < 0:
            watch = asyncio.ensure_future(_close_on_disconnect(receive, response))
        try:
            while chunk := await response.read():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except upstream.UpstreamError as exc:
            # the status line is sent: end the response; the client sees a short body
            log.info("response stream ended early: %s", exc)
        finally:
            if watch is not None:
                watch.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- bodies and replies -------------------------------------------------------------
    async def _read_body(self, scope: Scope, receive: Receive, limit: int) -> bytes:
        for k, v in scope["headers"]:
            if k == b"content-length" and v.isdigit() and int(v) > limit:
                raise PayloadTooLarge(f"request body of {int(v)} bytes exceeds {limit}")
        # the bytes count against the gateway's budget as they arrive; the caller gives
        # len(body) back when the request ends (a failed read gives its part back here)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone()
                chunk = message.get("body", b"")
                if size + len(chunk) > limit:
                    raise PayloadTooLarge(f"request body exceeds {limit} bytes")
                self.budget.take(len(chunk))
                size += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks) if len(chunks) != 1 else chunks[0]
        except BaseException:
            self.budget.give(size)
            raise

    async def _json(
        self, send: Send, status: int, doc: Any, headers: dict[str, str] | None = None
    ) -> None:
        await _respond(send, status, orjson.dumps(doc), b"application/json", headers)

    async def _error(self, send: Send, protocol: str, err: BerthError) -> None:
        shape = "openai" if protocol == "openai" else "v2"
        await self._json(send, err.status, error_body(shape, err), err.headers)


def _model_field(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    name = doc.get("model")
    if not isinstance(name, str) or not name:
        raise BadRequest("model must be a non-empty string naming the served model")
    return name


def _upstream_path(scope: Scope, target: paths.Target) -> str:
    # the raw path the route was parsed from (paths.parse), the /ns prefix cut
    query: bytes = scope.get("query_string") or b""
    if query:
        return target.upstream_path + "?" + query.decode("latin-1")
    return target.upstream_path


def _shown(raw: bytes) -> str:
    """A path in an error message: printable, at most 200 characters."""
    text = raw[:200].decode("latin-1")
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text + ("..." if len(raw) > 200 else "")


def _connection_named(value: bytes) -> frozenset[bytes]:
    """The field names a Connection header lists (they are hop-by-hop too)."""
    return frozenset(t.strip().lower() for t in value.split(b",") if t.strip())


def _request_headers(
    scope: Scope, drop: frozenset[bytes], trust_forwarded: bool
) -> list[tuple[bytes, bytes]]:
    """The request's fields for the model: hop-by-hop ones dropped (those the Connection
    header names included), and X-Forwarded-For/-Proto set by the gateway. A client's own
    X-Forwarded-* and Forwarded are dropped unless a trusted front proxy sets them
    (`trust_forwarded`): then the peer is appended to its X-Forwarded-For."""
    out: list[tuple[bytes, bytes]] = []
    connection: bytes | None = None
    prior_for: bytes | None = None
    proto: bytes | None = None
    for kv in scope["headers"]:  # (uvicorn lower-cased the names)
        k = kv[0]
        if k in drop:
            if k == b"connection":
                connection = kv[1] if connection is None else connection + b"," + kv[1]
            continue
        if k[:12] == b"x-forwarded-" or k == b"forwarded":
            if not trust_forwarded:
                continue
            if k == FORWARDED_FOR:
                prior_for = kv[1] if prior_for is None else prior_for + b", " + kv[1]
                continue
            if k == FORWARDED_PROTO:
                proto = kv[1]
        out.append(kv)
    if connection is not None:
        named = _connection_named(connection)
        out = [kv for kv in out if kv[0] not in named]
    client = scope.get("client")
    peer = client[0].encode("latin-1") if client else b"unknown"
    out.append((FORWARDED_FOR, peer if prior_for is None else prior_for + b", " + peer))
    if proto is None:
        out.append((FORWARDED_PROTO, b"https" if scope.get("scheme") == "https" else b"http"))
    return out


async def _stream_body(
    first: dict[str, Any], receive: Receive, started: list[bool]
) -> AsyncIterator[bytes]:
    started[0] = True
    message = first
    while True:
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
        message = await receive()


async def _wait_or_disconnect(event: asyncio.Event, receive: Receive, timeout: float) -> None:
    """Wait for `event`; TimeoutError past `timeout`, ClientGone when the client leaves."""
    if event.is_set():
        return
    waiter = asyncio.ensure_future(event.wait())
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        done, _ = await asyncio.wait({waiter, gone}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    finally:
        for t in (waiter, gone):
            t.cancel()
        for t in (waiter, gone):
            with contextlib.suppress(asyncio.CancelledError):
                await t
    if waiter in done:
        return
    if gone in done:
        raise ClientGone()
    raise TimeoutError()


async def _close_on_disconnect(receive: Receive, response: upstream.Response) -> None:
    await _disconnected(receive)
    response.conn.close()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _respond(
    send: Send, status: int, data: bytes, ctype: bytes, headers: dict[str, str] | None = None
) -> None:
    raw = [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
