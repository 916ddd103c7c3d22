"""Open Inference Protocol v2 tensors: JSON and the binary tensor data extension.

Decoding checks every field against the model's input specs and raises
:class:`~berth_runtime.errors.BadRequest` naming the field and what was expected. Binary
inputs become ``np.frombuffer`` views on the body (no copy, no JSON round trip).
Encoding writes JSON with orjson's native numpy support, or a JSON header followed by raw
tensor bytes when the client asked for binary outputs.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch

from berth_runtime.body import byte_count
from berth_runtime.datatypes import NUMPY, oip_of_numpy
from berth_runtime.errors import BadRequest, PayloadTooLarge
from berth_runtime.manifest import TensorSpec

HEADER = "inference-header-content-length"


@dataclass(slots=True)
class InferRequest:
    """A decoded request: arrays in model input order, batch rows, batching key."""

    id: str | None
    arrays: list[np.ndarray]
    rows: int
    key: Hashable
    outputs: list[tuple[int, bool]]
    """(index into model outputs, binary?) in the order the client asked for."""


def _loads(raw: bytes | memoryview, what: str = "request body") -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None


MAX_RANK = 16


def check_rows(rows: int, where: str, max_rows: int) -> None:
    """413 naming the limit when one request carries more rows than --max-rows."""
    if rows > max_rows:
        raise PayloadTooLarge(
            f"{where} has {rows} rows; at most {max_rows} rows per request "
            "(--max-rows / BERTH_MAX_ROWS)"
        )


def _shape(
    raw: Any,
    where: str,
    spec: TensorSpec,
    max_elements: int,
    max_rows: int,
    json_data: bool = False,
) -> tuple[tuple[int, ...], int]:
    if not isinstance(raw, list) or not raw or not all(type(d) is int for d in raw):
        raise BadRequest(f"{where}.shape must be a non-empty list of integers")
    if spec.shape and len(raw) != len(spec.shape):
        raise BadRequest(
            f"{where}.shape must have {len(spec.shape)} dimensions {list(spec.shape)}, got {raw}"
        )
    if len(raw) > MAX_RANK:
        raise BadRequest(f"{where}.shape has {len(raw)} dimensions; at most {MAX_RANK}")
    for i, got in enumerate(raw):
        want = spec.shape[i] if spec.shape else -1
        if got < 0:
            raise BadRequest(f"{where}.shape[{i}] must not be negative, got {got}")
        if want > 0 and got != want:
            raise BadRequest(f"{where}.shape[{i}] must be {want}, got {got}")
    if raw[0] < 1:
        raise BadRequest(f"{where}.shape[0] (batch) must be at least 1")
    check_rows(raw[0], f"{where}.shape[0]", max_rows)
    n = math.prod(raw)
    if n > max_elements:
        hint = f" ({where}.data must hold {n} values)" if json_data else ""
        raise BadRequest(
            f"{where}.shape declares {n} elements; at most {max_elements} fit in this body{hint}"
        )
    return tuple(raw), n


_INT_KINDS = "iu"
_FLOAT_TYPES = ("FP16", "FP32", "FP64", "BF16")


def typed_array(data: Any, where: str, datatype: str) -> np.ndarray:
    """JSON values -> an array of ``datatype``, refusing every silent coercion.

    Parsed without a dtype first, so null, strings, booleans for numbers, ragged lists,
    fractions for integers and out-of-range values are caught (numpy would turn null into
    NaN, "1" into 1, 1.5 into 1 and 300 into 44 for INT8), then cast.
    """
    try:
        if datatype == "BYTES":
            flat = np.array(data, dtype=object)
            if flat.dtype != np.object_ or not all(isinstance(x, str) for x in flat.reshape(-1)):
                raise BadRequest(f"{where} must hold strings for BYTES")
            return flat
        raw = np.asarray(data)
    except BadRequest:
        raise
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"{where} must be a regular (not ragged) list of {datatype}") from None
    kind = raw.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise BadRequest(f"{where} must hold true/false for BOOL")
        return raw
    if datatype in _FLOAT_TYPES:
        if kind not in "iuf":
            raise BadRequest(
                f"{where} must hold numbers (not null, strings or booleans) for {datatype}"
            )
        if datatype == "BF16":
            f32 = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
            return f32.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        with np.errstate(over="ignore"):
            arr = raw.astype(NUMPY[datatype], copy=False)
        if kind == "f" and arr.size and not np.isfinite(arr).all() and np.isfinite(raw).all():
            raise BadRequest(f"{where} holds a value out of range for {datatype}")
        return arr
    if kind not in _INT_KINDS:
        raise BadRequest(
            f"{where} must hold integers (not fractions, null, strings or booleans) for {datatype}"
        )
    target = NUMPY[datatype]
    if raw.size:
        info = np.iinfo(target)  # type: ignore[type-var]
        lo, hi = int(raw.min()), int(raw.max())
        if lo < info.min or hi > info.max:
            raise BadRequest(
                f"{where} holds {lo if lo < info.min else hi}, out of range for {datatype} "
                f"[{info.min}, {info.max}]"
            )
    return raw.astype(target, copy=False)


def _json_data(data: Any, where: str, datatype: str, shape: tuple[int, ...], n: int) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    arr = typed_array(data, f"{where}.data", datatype).reshape(-1)
    if arr.size != n:
        raise BadRequest(f"{where}.data has {arr.size} elements; shape {list(shape)} needs {n}")
    return arr.reshape(shape)


def _bytes_elements(buf: bytes, offset: int, size: int, n: int, where: str) -> np.ndarray:
    if n * 4 > size:  # every element carries a 4-byte length: check before allocating
        raise BadRequest(
            f"{where}.shape declares {n} BYTES elements but binary_data_size {size} holds at "
            f"most {size // 4}"
        )
    out = np.empty(n, dtype=object)
    pos, end = offset, offset + size
    for i in range(n):
        if pos + 4 > end:
            raise BadRequest(f"{where}: binary BYTES data ends before element {i}")
        (length,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + length > end:
            raise BadRequest(f"{where}: binary BYTES element {i} runs past its data")
        out[i] = buf[pos : pos + length]
        pos += length
    if pos != end:
        raise BadRequest(f"{where}: binary BYTES data has {end - pos} trailing bytes")
    return out


def decode(
    body: bytes,
    header_length: str | None,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_elements: int,
    max_rows: int,
) -> InferRequest:
    """Decode and validate one v2 infer request body."""
    offset = 0
    if header_length is not None:
        shown = repr(header_length) if len(header_length) <= 40 else "a longer value"
        wrong = BadRequest(
            f"Inference-Header-Content-Length must be an integer between 1 and the body "
            f"length {len(body)}, got {shown}"
        )
        try:
            offset = byte_count(header_length, "Inference-Header-Content-Length")
        except BadRequest:
            raise wrong from None
        if not 0 < offset <= len(body):
            raise wrong
        req = _loads(
            memoryview(body)[:offset],
            f"the JSON header (the first {offset} bytes, per Inference-Header-Content-Length)",
        )
    else:
        req = _loads(body)
        offset = len(body)
    if not isinstance(req, dict):
        raise BadRequest("request body must be a JSON object with an 'inputs' list")
    raw_inputs = req.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("inputs must be a non-empty list")
    if len(raw_inputs) > len(inputs):
        names = [s.name for s in inputs]
        raise BadRequest(f"inputs must have {len(inputs)} entries {names}, got {len(raw_inputs)}")
    req_id = req.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise BadRequest("id must be a string")
    by_name = {s.name: i for i, s in enumerate(inputs)}
    arrays: list[np.ndarray | None] = [None] * len(inputs)
    key: list[tuple[str, tuple[int, ...]]] = [("", ())] * len(inputs)
    rows = -1
    for j, item in enumerate(raw_inputs):
        where = f"inputs[{j}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object with name, shape, datatype and data")
        name = item.get("name")
        if not isinstance(name, str):
            raise BadRequest(f"{where}.name must be a string")
        if name in by_name:
            idx = by_name[name]
        else:
            raise BadRequest(
                f"{where}.name {name!r} is not an input; expected one of {list(by_name)}"
            )
        if arrays[idx] is not None:
            raise BadRequest(f"{where}.name {name!r} appears twice")
        spec = inputs[idx]
        datatype = item.get("datatype")
        if datatype != spec.datatype:
            raise BadRequest(f"{where}.datatype must be {spec.datatype}, got {datatype!r}")
        params = item.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if "data" not in item and size is None:
            raise BadRequest(f"{where} needs data or parameters.binary_data_size")
        budget = len(body) - offset if "data" not in item else len(body)
        shape, n = _shape(
            item.get("shape"), where, spec, min(max_elements, budget), max_rows, "data" in item
        )
        if size is not None:
            if type(size) is not int or size < 0:
                raise BadRequest(
                    f"{where}.parameters.binary_data_size must be a non-negative integer"
                )
            if "data" in item:
                raise BadRequest(f"{where} has both data and binary_data_size")
            if offset + size > len(body):
                raise BadRequest(
                    f"{where}.parameters.binary_data_size {size} runs past the end of the body"
                )
            if datatype == "BYTES":
                arr = _bytes_elements(body, offset, size, n, where).reshape(shape)
            else:
                dtype = NUMPY[datatype]
                if size != n * dtype.itemsize:
                    raise BadRequest(
                        f"{where}.parameters.binary_data_size must be {n * dtype.itemsize} "
                        f"for shape {list(shape)} {datatype}, got {size}"
                    )
                arr = np.frombuffer(body, dtype=dtype, count=n, offset=offset).reshape(shape)
                if datatype == "BOOL" and n and np.frombuffer(body, np.uint8, n, offset).max() > 1:
                    raise BadRequest(f"{where}: BOOL bytes must be 0 or 1")
            offset += size
        else:  # "data" in item (checked above)
            arr = _json_data(item["data"], where, datatype, shape, n)
        if rows == -1:
            rows = shape[0]
        elif shape[0] != rows:
            raise BadRequest(f"{where}.shape[0] is {shape[0]}; every input must have {rows} rows")
        arrays[idx] = arr
        key[idx] = (datatype, shape[1:])
    missing = [s.name for s, a in zip(inputs, arrays, strict=True) if a is None]
    if missing:
        raise BadRequest(f"inputs is missing {missing}; the model takes {[s.name for s in inputs]}")
    if offset != len(body):
        raise BadRequest(
            f"body has {len(body) - offset} bytes of binary data that no input claims "
            "(check binary_data_size and Inference-Header-Content-Length)"
        )
    return InferRequest(req_id, arrays, rows, tuple(key), _requested(req, outputs))  # type: ignore[arg-type]


def _requested(req: dict[str, Any], outputs: Sequence[TensorSpec]) -> list[tuple[int, bool]]:
    params = req.get("parameters")
    default_binary = False
    if params is not None:
        if not isinstance(params, dict):
            raise BadRequest("parameters must be an object")
        flag = params.get("binary_data_output", False)
        if not isinstance(flag, bool):
            raise BadRequest("parameters.binary_data_output must be true or false")
        default_binary = flag
    raw = req.get("outputs")
    if raw is None:
        return [(i, default_binary) for i in range(len(outputs))]
    if not isinstance(raw, list):
        raise BadRequest("outputs must be a list")
    names = {s.name: i for i, s in enumerate(outputs)}
    chosen: list[tuple[int, bool]] = []
    seen: set[str] = set()
    for j, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or name not in names:
            raise BadRequest(f"outputs[{j}].name must be one of {list(names)}, got {name!r}")
        if name in seen:
            raise BadRequest(f"outputs[{j}].name {name!r} appears twice")
        seen.add(name)
        p = item.get("parameters") or {}
        if not isinstance(p, dict):
            raise BadRequest(f"outputs[{j}].parameters must be an object")
        binary = p.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise BadRequest(f"outputs[{j}].parameters.binary_data must be true or false")
        chosen.append((names[name], binary))
    return chosen if chosen else [(i, default_binary) for i in range(len(outputs))]


def _json_ready(a: np.ndarray) -> Any:
    if a.dtype == np.object_:
        return [
            x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in a.reshape(-1)
        ]
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    return np.ascontiguousarray(a).reshape(-1)


def _binary(a: np.ndarray) -> bytes | memoryview:
    if a.dtype == np.object_:
        parts = []
        for x in a.reshape(-1):
            b = x if isinstance(x, bytes) else str(x).encode("utf-8")
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).data


def encode(
    model_name: str,
    req: InferRequest,
    results: list[np.ndarray],
    outputs: Sequence[TensorSpec],
) -> tuple[bytes, int | None]:
    """Encode the response; returns (body, JSON header length or None when all JSON)."""
    out_json: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for idx, binary in req.outputs:
        a = results[idx]
        entry: dict[str, Any] = {
            "name": outputs[idx].name,
            "datatype": oip_of_numpy(a.dtype),
            "shape": list(a.shape),
        }
        if binary:
            blob = _binary(a)
            entry["parameters"] = {
                "binary_data_size": len(blob) if isinstance(blob, bytes) else blob.nbytes
            }
            blobs.append(blob)
        else:
            entry["data"] = _json_ready(a)
        out_json.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": out_json}
    if req.id is not None:
        doc["id"] = req.id
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)
