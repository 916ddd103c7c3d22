"""OpenAI-compatible routes: ``/v1/embeddings`` for embedding models, ``/v1/chat/completions``
and ``/v1/completions`` for text generation models (handled in :mod:`berth_runtime.llm.api`),
and ``/v1/models`` for both.

``encoding_format`` ``float`` returns lists of numbers; ``base64`` (what the official
client asks for by default) returns little-endian float32 bytes, base64 encoded.
``dimensions`` truncates each embedding, like sentence-transformers' ``truncate_dim``.
Token-array inputs are refused with 400: the server takes text.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from berth_runtime.body import JSON, Reply, json_object, json_response, read_body, to_response
from berth_runtime.codec_v2 import check_rows
from berth_runtime.errors import BadRequest, ModelNotFound
from berth_runtime.openapi import (
    CHAT_COMPLETIONS,
    COMPLETIONS,
    EMBEDDINGS,
    json_body,
    responses,
)
from berth_runtime.state import RuntimeState


def _texts(doc: dict[str, Any], max_rows: int) -> list[str]:
    raw = doc.get("input")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        check_rows(len(raw), "input", max_rows)
        return raw
    raise BadRequest(
        "input must be a string or a non-empty list of strings (token arrays are not supported)"
    )


async def embeddings_reply(state: RuntimeState, body: bytes) -> Reply:
    """POST /v1/embeddings, shared by the FastAPI route and the ASGI fast path."""
    doc = json_object(body)
    name = doc.get("model")
    if not isinstance(name, str):
        raise BadRequest("model must be a string naming the served model")
    model, batcher = state.require(name)
    if not model.embedding:
        raise ModelNotFound(f"model {name!r} is not an embedding model")
    texts = _texts(doc, state.max_rows)
    fmt = doc.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise BadRequest(f"encoding_format must be 'float' or 'base64', got {fmt!r}")
    dims = doc.get("dimensions")
    full = model.outputs[0].shape[1]
    if dims is not None and (type(dims) is not int or not 0 < dims <= full):
        raise BadRequest(f"dimensions must be an integer from 1 to {full}, got {dims!r}")
    arr = np.array(texts, dtype=object)
    (emb,) = await batcher.submit([arr], len(texts), ("BYTES", ()))
    if dims is not None:
        emb = emb[:, :dims]
    data: list[dict[str, Any]] = []
    for i, row in enumerate(emb):
        value: Any = (
            base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode()
            if fmt == "base64"
            else np.ascontiguousarray(row)
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(len(t.split()) for t in texts)  # approximate: whitespace words
    doc_out = {
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return orjson.dumps(doc_out, option=orjson.OPT_SERIALIZE_NUMPY), JSON, None


def build_router(state: RuntimeState) -> APIRouter:
    router = APIRouter(tags=["openai"])
    limit = state.settings.max_body_bytes
    created = int(time.time())

    @router.get("/v1/models", responses=responses(401))
    async def list_models() -> Response:
        data = []
        if state.model is not None and (state.model.embedding or state.model.generative):
            data.append(
                {"id": state.name, "object": "model", "created": created, "owned_by": "berth"}
            )
        return json_response({"object": "list", "data": data})

    @router.post(
        "/v1/embeddings",
        openapi_extra={"requestBody": json_body(EMBEDDINGS)},
        responses=responses(400, 401, 404, 413, 429, 503, 504),
    )
    async def embeddings(request: Request) -> Response:
        return to_response(await embeddings_reply(state, await read_body(request, limit)))

    @router.post(
        "/v1/chat/completions",
        openapi_extra={"requestBody": json_body(CHAT_COMPLETIONS)},
        responses=responses(400, 401, 404, 413, 429, 503, 504),
    )
    async def chat_completions(request: Request) -> Response:
        from berth_runtime.llm import api

        return await api.chat(state, request)

    @router.post(
        "/v1/completions",
        openapi_extra={"requestBody": json_body(COMPLETIONS)},
        responses=responses(400, 401, 404, 413, 429, 503, 504),
    )
    async def completions(request: Request) -> Response:
        from berth_runtime.llm import api

        return await api.completions(state, request)

    return router
