"""A corpus of malformed requests: each gets the right 4xx JSON error; the server stays up."""

from __future__ import annotations

import httpx
import orjson
import pytest
from runtime_helpers import Server

pytestmark = pytest.mark.integration

INFER = "/v2/models/cnn/infer"
N = 3 * 16 * 16
GOOD = {"name": "input__0", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [0.0] * N}


def req(**changes: object) -> bytes:
    """A JSON infer body whose single input has ``changes`` applied (None deletes a key)."""
    tensor = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    return orjson.dumps({"inputs": [tensor]})


def binary(
    size: int | None = N * 4, payload: int = N * 4, header_len: str | None = None, **extra: object
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body: JSON header, then ``payload`` bytes of tensor data."""
    tensor: dict[str, object] = {"name": "input__0", "shape": [1, 3, 16, 16], "datatype": "FP32"}
    if size is not None:
        tensor["parameters"] = {"binary_data_size": size}
    head = orjson.dumps({"inputs": [tensor], **extra})
    hl = str(len(head)) if header_len is None else header_len
    return head + b"\0" * payload, {"Inference-Header-Content-Length": hl}


def b(case: tuple[bytes, dict[str, str]]) -> dict[str, object]:
    return {"content": case[0], "headers": case[1]}


# (id, method, path, request kwargs, expected status) - one row per way a client can go wrong.
CASES: list[tuple[str, str, str, dict[str, object], int]] = [
    ("bad-json", "POST", INFER, {"content": b"{"}, 400),
    ("empty-body", "POST", INFER, {"content": b""}, 400),
    ("json-array", "POST", INFER, {"content": b"[]"}, 400),
    ("json-string", "POST", INFER, {"content": b'"hi"'}, 400),
    ("not-utf8", "POST", INFER, {"content": b"\xff\xfe{}"}, 400),
    ("no-inputs", "POST", INFER, {"content": b"{}"}, 400),
    ("inputs-not-list", "POST", INFER, {"content": b'{"inputs": {}}'}, 400),
    ("inputs-empty", "POST", INFER, {"content": b'{"inputs": []}'}, 400),
    ("input-not-object", "POST", INFER, {"content": b'{"inputs": ["x"]}'}, 400),
    ("two-inputs-for-one", "POST", INFER, {"content": orjson.dumps({"inputs": [GOOD, GOOD]})}, 400),
    ("name-missing", "POST", INFER, {"content": req(name=None)}, 400),
    ("name-not-string", "POST", INFER, {"content": req(name=3)}, 400),
    ("wrong-datatype", "POST", INFER, {"content": req(datatype="INT64")}, 400),
    ("unknown-datatype", "POST", INFER, {"content": req(datatype="FP8")}, 400),
    ("datatype-missing", "POST", INFER, {"content": req(datatype=None)}, 400),
    ("shape-missing", "POST", INFER, {"content": req(shape=None)}, 400),
    ("shape-not-list", "POST", INFER, {"content": req(shape="1,3,16,16")}, 400),
    ("shape-wrong-rank", "POST", INFER, {"content": req(shape=[1, 3, 16])}, 400),
    ("shape-wrong-dim", "POST", INFER, {"content": req(shape=[1, 3, 16, 15])}, 400),
    ("shape-negative-dim", "POST", INFER, {"content": req(shape=[-1, 3, 16, 16])}, 400),
    ("shape-negative-inner", "POST", INFER, {"content": req(shape=[1, -3, 16, 16])}, 400),
    ("shape-zero-batch", "POST", INFER, {"content": req(shape=[0, 3, 16, 16], data=[])}, 400),
    ("shape-huge-rows", "POST", INFER, {"content": req(shape=[10**12, 3, 16, 16])}, 413),
    ("shape-huge", "POST", INFER, {"content": req(shape=[1, 3, 16, 16 * 10**9])}, 400),
    ("shape-float-dim", "POST", INFER, {"content": req(shape=[1.5, 3, 16, 16])}, 400),
    ("shape-bool-dim", "POST", INFER, {"content": req(shape=[True, 3, 16, 16])}, 400),
    ("data-too-short", "POST", INFER, {"content": req(data=[0.0] * (N - 1))}, 400),
    ("data-too-long", "POST", INFER, {"content": req(data=[0.0] * (N + 1))}, 400),
    ("data-strings", "POST", INFER, {"content": req(data=["a"] * N)}, 400),
    ("data-nulls", "POST", INFER, {"content": req(data=[None] * N)}, 400),
    ("data-ragged", "POST", INFER, {"content": req(data=[[0.0] * 3, [0.0]])}, 400),
    ("data-object", "POST", INFER, {"content": req(data={"a": 1})}, 400),
    ("data-missing", "POST", INFER, {"content": req(data=None)}, 400),
    ("data-nan-literal", "POST", INFER, {"content": req(data=[0.0]).replace(b"0.0", b"NaN")}, 400),
    ("id-not-string", "POST", INFER, {"content": orjson.dumps({"id": 5, "inputs": [GOOD]})}, 400),
    (
        "parameters-not-object",
        "POST",
        INFER,
        {"content": orjson.dumps({"parameters": [], "inputs": [GOOD]})},
        400,
    ),
    (
        "binary-output-flag-not-bool",
        "POST",
        INFER,
        {"content": orjson.dumps({"parameters": {"binary_data_output": "yes"}, "inputs": [GOOD]})},
        400,
    ),
    (
        "outputs-not-list",
        "POST",
        INFER,
        {"content": orjson.dumps({"inputs": [GOOD], "outputs": {}})},
        400,
    ),
    (
        "outputs-unknown-name",
        "POST",
        INFER,
        {"content": orjson.dumps({"inputs": [GOOD], "outputs": [{"name": "nope"}]})},
        400,
    ),
    ("binary-header-not-int", "POST", INFER, b(binary(header_len="abc")), 400),
    ("binary-header-zero", "POST", INFER, b(binary(header_len="0")), 400),
    ("binary-header-past-body", "POST", INFER, b(binary(header_len="99999999")), 400),
    ("binary-header-too-short", "POST", INFER, b(binary(header_len="10")), 400),
    ("binary-size-too-small", "POST", INFER, b(binary(size=N * 4 - 4, payload=N * 4 - 4)), 400),
    ("binary-size-past-body", "POST", INFER, b(binary(size=N * 4, payload=N * 2)), 400),
    ("binary-size-negative", "POST", INFER, b(binary(size=-4)), 400),
    ("binary-size-not-int", "POST", INFER, b(binary(size="12")), 400),  # type: ignore[arg-type]
    ("binary-trailing-bytes", "POST", INFER, b(binary(payload=N * 4 + 8)), 400),
    (
        "binary-and-json-data",
        "POST",
        INFER,
        {
            "content": orjson.dumps({"inputs": [{**GOOD, "parameters": {"binary_data_size": 4}}]})
            + b"\0\0\0\0",
            "headers": {
                "Inference-Header-Content-Length": str(
                    len(orjson.dumps({"inputs": [{**GOOD, "parameters": {"binary_data_size": 4}}]}))
                )
            },
        },
        400,
    ),
    ("body-over-limit", "POST", INFER, {"content": b" " * (2 << 20)}, 413),
    ("unknown-model-infer", "POST", "/v2/models/nope/infer", {"content": req()}, 404),
    ("unknown-model-metadata", "GET", "/v2/models/nope", {}, 404),
    ("unknown-model-ready", "GET", "/v2/models/nope/ready", {}, 404),
    ("v1-bad-json", "POST", "/v1/models/cnn:predict", {"content": b"{nope"}, 400),
    ("v1-no-instances", "POST", "/v1/models/cnn:predict", {"content": b'{"x": 1}'}, 400),
    (
        "v1-wrong-row-shape",
        "POST",
        "/v1/models/cnn:predict",
        {"content": b'{"instances": [[1, 2]]}'},
        400,
    ),
    ("v1-strings", "POST", "/v1/models/cnn:predict", {"content": b'{"instances": ["a"]}'}, 400),
    (
        "v1-unknown-model",
        "POST",
        "/v1/models/nope:predict",
        {"content": b'{"instances": [1]}'},
        404,
    ),
    ("v1-body-over-limit", "POST", "/v1/models/cnn:predict", {"content": b"[" * (2 << 20)}, 413),
    (
        "openai-not-embedding-model",
        "POST",
        "/v1/embeddings",
        {"content": b'{"model": "cnn", "input": "hi"}'},
        404,
    ),
    ("openai-model-missing", "POST", "/v1/embeddings", {"content": b'{"input": "hi"}'}, 400),
    ("get-on-infer", "GET", INFER, {}, 405),
    ("unknown-route", "GET", "/v3/anything", {}, 404),
]


# case id -> what its error must say: the field (its path) and what was expected there, as
# the README promises; every case has one (test_every_case_says_what_its_error_names).
NAMES: dict[str, str] = {
    "bad-json": "request body is not valid JSON",
    "empty-body": "request body is not valid JSON",
    "json-array": "request body must be a JSON object with an 'inputs' list",
    "json-string": "request body must be a JSON object with an 'inputs' list",
    "not-utf8": "request body is not valid JSON: str is not valid UTF-8",
    "no-inputs": "inputs must be a non-empty list",
    "inputs-not-list": "inputs must be a non-empty list",
    "inputs-empty": "inputs must be a non-empty list",
    "input-not-object": "inputs[0] must be an object with name, shape, datatype and data",
    "two-inputs-for-one": "inputs must have 1 entries ['input__0'], got 2",
    "name-missing": "inputs[0].name must be a string",
    "name-not-string": "inputs[0].name must be a string",
    "wrong-datatype": "inputs[0].datatype must be FP32, got 'INT64'",
    "unknown-datatype": "inputs[0].datatype must be FP32, got 'FP8'",
    "datatype-missing": "inputs[0].datatype must be FP32, got None",
    "shape-missing": "inputs[0].shape must be a non-empty list of integers",
    "shape-not-list": "inputs[0].shape must be a non-empty list of integers",
    "shape-wrong-rank": "inputs[0].shape must have 4 dimensions [-1, 3, 16, 16], got [1, 3, 16]",
    "shape-wrong-dim": "inputs[0].shape[3] must be 16, got 15",
    "shape-negative-dim": "inputs[0].shape[0] must not be negative, got -1",
    "shape-negative-inner": "inputs[0].shape[1] must not be negative, got -3",
    "shape-zero-batch": "inputs[0].shape[0] (batch) must be at least 1",
    "shape-huge-rows": "inputs[0].shape[0] has 1000000000000 rows; at most 2048 rows per request (--max-rows",
    "shape-huge": "inputs[0].shape[3] must be 16, got 16000000000",
    "shape-float-dim": "inputs[0].shape must be a non-empty list of integers",
    "shape-bool-dim": "inputs[0].shape must be a non-empty list of integers",
    "data-too-short": "inputs[0].data has 767 elements; shape [1, 3, 16, 16] needs 768",
    "data-too-long": "inputs[0].data has 769 elements; shape [1, 3, 16, 16] needs 768",
    "data-strings": "inputs[0].data must hold numbers (not null, strings or booleans) for FP32",
    "data-nulls": "inputs[0].data must hold numbers (not null, strings or booleans) for FP32",
    "data-ragged": "inputs[0].data must hold 768 values",
    "data-object": "inputs[0].data must hold 768 values",
    "data-missing": "inputs[0] needs data or parameters.binary_data_size",
    "data-nan-literal": "request body is not valid JSON: unexpected character",
    "id-not-string": "id must be a string",
    "parameters-not-object": "parameters must be an object",
    "binary-output-flag-not-bool": "parameters.binary_data_output must be true or false",
    "outputs-not-list": "outputs must be a list",
    "outputs-unknown-name": "outputs[0].name must be one of ['output__0'], got 'nope'",
    "binary-header-not-int": "Inference-Header-Content-Length must be an integer between 1 and the body length",
    "binary-header-zero": "Inference-Header-Content-Length must be an integer between 1 and the body length",
    "binary-header-past-body": "Inference-Header-Content-Length must be an integer between 1 and the body length",
    "binary-header-too-short": "the JSON header (the first 10 bytes, per Inference-Header-Content-Length) is not valid JSON",
    "binary-size-too-small": "inputs[0].parameters.binary_data_size must be 3072 for shape [1, 3, 16, 16] FP32, got 3068",
    "binary-size-past-body": "inputs[0].parameters.binary_data_size 3072 runs past the end of the body",
    "binary-size-negative": "inputs[0].parameters.binary_data_size must be a non-negative integer",
    "binary-size-not-int": "inputs[0].parameters.binary_data_size must be a non-negative integer",
    "binary-trailing-bytes": "body has 8 bytes of binary data that no input claims (check binary_data_size",
    "binary-and-json-data": "inputs[0] has both data and binary_data_size",
    "body-over-limit": "exceeds the limit of 1048576 bytes (--max-body-bytes)",
    "unknown-model-infer": "model 'nope' is not served here; this server serves 'cnn'",
    "unknown-model-metadata": "model 'nope' is not served here; this server serves 'cnn'",
    "unknown-model-ready": "model 'nope' is not served here; this server serves 'cnn'",
    "v1-bad-json": "request body is not valid JSON",
    "v1-no-instances": "instances must be a non-empty list with one entry per row",
    "v1-wrong-row-shape": "instances: each row must have shape [3, 16, 16] for input 'input__0', got rows of shape [2]",
    "v1-strings": "instances must hold numbers (not null, strings or booleans) for FP32",
    "v1-unknown-model": "model 'nope' is not served here; this server serves 'cnn'",
    "v1-body-over-limit": "exceeds the limit of 1048576 bytes (--max-body-bytes)",
    "openai-not-embedding-model": "model 'cnn' is not an embedding model",
    "openai-model-missing": "model must be a string naming the served model",
    "get-on-infer": "GET /v2/models/cnn/infer: method not allowed; this route takes POST",
    "unknown-route": "GET /v3/anything: no such route",
}  # fmt: skip


@pytest.fixture(scope="module")
def client(ts_server: Server) -> httpx.Client:
    with httpx.Client(base_url=ts_server.url, timeout=30) as c:
        yield c  # type: ignore[misc]


def test_every_case_says_what_its_error_names() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)), "two cases share an id"
    assert set(ids) == set(NAMES), set(ids) ^ set(NAMES)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "names"),
    [(*c[1:], NAMES.get(c[0], "")) for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_malformed_request(
    client: httpx.Client,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    names: str,
) -> None:
    r = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    error = r.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert names and names in message, f"want {names!r} in {message!r}"
    assert "Traceback" not in r.text
    assert client.get("/v2/health/ready").status_code == 200


def test_errors_name_the_field(client: httpx.Client) -> None:
    r = client.post(INFER, content=req(datatype="INT64"))
    assert r.json() == {"error": "inputs[0].datatype must be FP32, got 'INT64'"}
    r = client.post(INFER, content=req(shape=[1, 3, 16, 15]))
    assert r.json() == {"error": "inputs[0].shape[3] must be 16, got 15"}


def test_server_still_serves_after_corpus(client: httpx.Client) -> None:
    r = client.post(INFER, content=req())
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 10]
