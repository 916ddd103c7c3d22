"""The app factory: wires state, routers, error mapping and middleware. Nothing else.

``create_app(settings)`` has no side effects until the app starts: the lifespan starts
loading the model in the background (so liveness answers during a long download), and
readiness turns true only after the warm-up inference.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from berth_runtime import __version__, routes_openai, routes_v1, routes_v2, startup
from berth_runtime.body import json_response
from berth_runtime.errors import BadRequest, BerthError, InternalError, error_body, protocol_of
from berth_runtime.middleware import ObserveMiddleware
from berth_runtime.models.base import ServedModel
from berth_runtime.settings import Settings
from berth_runtime.state import RuntimeState

log = logging.getLogger("berth.app")


def _error_response(request: Request, err: BerthError) -> Response:
    resp = json_response(error_body(protocol_of(request.url.path), err), err.status)
    if err.headers:
        resp.headers.update(err.headers)
    return resp


def _install_error_handlers(app: FastAPI) -> None:
    async def on_berth(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BerthError)
        return _error_response(request, exc)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        route = f"{request.method} {request.url.path}"
        if exc.status_code == 405:  # say which methods the route takes
            allow = (exc.headers or {}).get("Allow", "")
            err = BerthError(f"{route}: method not allowed; this route takes {allow or 'others'}")
            err.headers = {"Allow": allow} if allow else {}
        elif exc.status_code == 404:
            err = BerthError(f"{route}: no such route (Not Found)")
        else:
            err = BerthError(str(exc.detail))
        err.status = exc.status_code
        return _error_response(request, err)

    async def on_validation(request: Request, exc: Exception) -> Response:
        return _error_response(request, BadRequest(f"invalid request: {exc}"))

    async def on_crash(request: Request, exc: Exception) -> Response:
        err = InternalError()
        log.error("internal error %s on %s", err.error_id, request.url.path, exc_info=exc)
        return _error_response(request, err)

    app.add_exception_handler(BerthError, on_berth)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_crash)


def create_app(
    settings: Settings,
    *,
    loader: Callable[[Settings, torch.device], ServedModel] | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
    state: RuntimeState | None = None,
) -> FastAPI:
    """Build the ASGI app for one model. ``loader`` replaces the format loaders in tests."""
    state = state or RuntimeState(settings, loader=loader, on_fatal=on_fatal)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="Berth runtime",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.berth = state
    _install_error_handlers(app)
    app.include_router(routes_v2.build_router(state))
    app.include_router(routes_v1.build_router(state))
    app.include_router(routes_openai.build_router(state))

    registry = state.metrics.registry

    @app.get("/metrics", include_in_schema=True, tags=["metrics"])
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(startup.PATH, include_in_schema=False)
    async def startup_phases() -> Response:
        # the start-up phases' wall-clock stamps, read once by the operator per new pod
        return json_response(state.startup.document(state.name, state.ready))

    app.add_middleware(ObserveMiddleware, state=state)
    return app
