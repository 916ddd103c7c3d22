"""KServe v1: ``GET /v1/models/{name}`` and ``POST /v1/models/{name}:predict``.

``{"instances": [...]}`` (or ``{"inputs": [...]}``) holds one entry per row. A single-input
model takes the row itself; a multi-input model takes ``{"<input name>": row, ...}``. The
reply is ``{"predictions": [...]}``: rows of the single output, or one object per row
keyed by output name when there are several.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from berth_runtime.body import JSON, Reply, json_object, json_response, read_body, to_response
from berth_runtime.codec_v2 import check_rows, typed_array
from berth_runtime.errors import BadRequest
from berth_runtime.manifest import TensorSpec
from berth_runtime.openapi import V1_PREDICT, json_body, name_param, responses
from berth_runtime.state import RuntimeState


def _array(rows: list[Any], spec: TensorSpec, where: str, max_elements: int) -> np.ndarray:
    arr = typed_array(rows, where, spec.datatype)
    if spec.shape and (
        arr.ndim != len(spec.shape)
        or any(
            want > 0 and got != want
            for got, want in zip(arr.shape[1:], spec.shape[1:], strict=True)
        )
    ):
        raise BadRequest(
            f"{where}: each row must have shape {list(spec.shape[1:])} for input {spec.name!r}, "
            f"got rows of shape {list(arr.shape[1:])}"
        )
    if arr.size > max_elements:
        raise BadRequest(f"{where} has {arr.size} elements; at most {max_elements}")
    return arr


def decode(
    doc: dict[str, Any], inputs: tuple[TensorSpec, ...], max_elements: int, max_rows: int
) -> list[np.ndarray]:
    field = "instances" if "instances" in doc else "inputs"
    rows = doc.get(field)
    if not isinstance(rows, list) or not rows:
        raise BadRequest("instances must be a non-empty list with one entry per row")
    check_rows(len(rows), field, max_rows)
    if len(inputs) == 1:
        return [_array(rows, inputs[0], field, max_elements)]
    names = [s.name for s in inputs]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadRequest(f"{field}[{i}] must be an object with keys {names}")
        unknown = sorted(set(row) - set(names))
        if unknown:
            raise BadRequest(f"{field}[{i}] has unknown inputs {unknown}; expected {names}")
        missing = [n for n in names if n not in row]
        if missing:
            raise BadRequest(f"{field}[{i}] is missing inputs {missing}")
    return [
        _array([row[spec.name] for row in rows], spec, f"{field}[*].{spec.name}", max_elements)
        for spec in inputs
    ]


async def predict_reply(state: RuntimeState, name: str, body: bytes) -> Reply:
    """POST /v1/models/{name}:predict, shared by the FastAPI route and the ASGI fast path."""
    model, batcher = state.require(name)
    doc = json_object(body)
    arrays = decode(doc, model.inputs, state.max_elements, state.max_rows)
    rows = len(arrays[0])
    key = tuple((s.datatype, a.shape[1:]) for s, a in zip(model.inputs, arrays, strict=True))
    results = await batcher.submit(arrays, rows, key)
    if len(results) == 1:
        predictions: Any = _plain(results[0])
    else:
        names = [o.name for o in model.outputs]
        predictions = [
            {n: _plain(r[i]) for n, r in zip(names, results, strict=True)} for i in range(rows)
        ]
    return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY), JSON, None


def build_router(state: RuntimeState) -> APIRouter:
    router = APIRouter(tags=["v1"])
    limit = state.settings.max_body_bytes
    param = [name_param(state.name)]

    @router.get(
        "/v1/models/{name}", openapi_extra={"parameters": param}, responses=responses(401, 404, 503)
    )
    async def model_status(request: Request) -> Response:
        name = request.path_params["name"]
        state.require(name)
        return json_response({"name": name, "ready": True})

    @router.post(
        "/v1/models/{name}:predict",
        openapi_extra={"parameters": param, "requestBody": json_body(V1_PREDICT)},
        responses=responses(400, 401, 404, 413, 429, 503, 504),
    )
    async def predict(request: Request) -> Response:
        name = request.path_params["name"]
        state.require(name)
        return to_response(await predict_reply(state, name, await read_body(request, limit)))

    return router


def _plain(a: np.ndarray) -> Any:
    if a.dtype == np.object_:
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in a.tolist()]
    if a.dtype == np.float16:
        return a.astype(np.float32)
    return np.ascontiguousarray(a)
