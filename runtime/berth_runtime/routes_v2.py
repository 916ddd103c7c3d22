"""Open Inference Protocol v2 over REST: health, model metadata and readiness, infer."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from berth_runtime import __version__, codec_v2
from berth_runtime.body import JSON, Reply, json_response, read_body, to_response
from berth_runtime.errors import NotReady
from berth_runtime.openapi import V2_INFER, json_body, name_param, responses
from berth_runtime.state import RuntimeState

OCTET = "application/octet-stream"


def _aligned(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Binary inputs may start at any byte; copy the rare misaligned one for torch."""
    return [a if a.flags.aligned else a.copy() for a in arrays]


async def infer_reply(
    state: RuntimeState, name: str, body: bytes, header_length: str | None
) -> Reply:
    """POST /v2/models/{name}/infer, shared by the FastAPI route and the ASGI fast path."""
    model, batcher = state.require(name)
    req = codec_v2.decode(
        body, header_length, model.inputs, model.outputs, state.max_elements, state.max_rows
    )
    results = await batcher.submit(_aligned(req.arrays), req.rows, req.key)
    content, header_len = codec_v2.encode(state.name, req, results, model.outputs)
    if header_len is None:
        return content, JSON, None
    return content, OCTET, {"Inference-Header-Content-Length": str(header_len)}


def build_router(state: RuntimeState) -> APIRouter:
    router = APIRouter(tags=["v2"])
    limit = state.settings.max_body_bytes
    param = [name_param(state.name)]

    @router.get("/v2", responses=responses(401))
    async def server_metadata() -> Response:
        return json_response(
            {"name": "berth", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    @router.get("/v2/health/live")
    async def live() -> Response:
        return json_response({"live": True})

    @router.get("/v2/health/ready", responses=responses(503))
    async def ready() -> Response:
        if not state.ready:
            raise NotReady("shutting down" if state.draining else "model is still loading")
        return json_response({"ready": True})

    @router.get(
        "/v2/models/{name}", openapi_extra={"parameters": param}, responses=responses(401, 404, 503)
    )
    async def model_metadata(request: Request) -> Response:
        model, _ = state.require(request.path_params["name"])
        return json_response(model.metadata())

    @router.get(
        "/v2/models/{name}/ready",
        openapi_extra={"parameters": param},
        responses=responses(401, 404, 503),
    )
    async def model_ready(request: Request) -> Response:
        name = request.path_params["name"]
        state.require(name)
        return json_response({"name": name, "ready": True})

    @router.post(
        "/v2/models/{name}/infer",
        openapi_extra={"parameters": param, "requestBody": json_body(V2_INFER)},
        responses=responses(400, 401, 404, 413, 429, 503, 504),
    )
    async def infer(request: Request) -> Response:
        name = request.path_params["name"]
        state.require(name)
        body = await read_body(request, limit)
        return to_response(
            await infer_reply(state, name, body, request.headers.get(codec_v2.HEADER))
        )

    return router
