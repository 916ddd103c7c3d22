"""Tensors of the wrong rank and numbers of thousands of digits: 400 naming the field, never 500.

Python's ``int()`` refuses strings of more than 4300 digits with a ValueError; a header
parsed with it answered 500. A tensor of the wrong rank must name the rank and shape the
model expects, in OIP v2 and in KServe v1, for every kind of model that declares one.
Real server processes (the shared fleet), real sockets.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import orjson
import pytest
from runtime_helpers import TOKEN, Server

pytestmark = pytest.mark.integration

N = 3 * 16 * 16
DIGITS = "9" * 5000
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def cnn(name: str = "input__0", **changes: Any) -> bytes:
    tensor = {"name": name, "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [0.0] * N}
    return orjson.dumps({"inputs": [{**tensor, **changes}]})


def raw(text: str, number: str = DIGITS) -> dict[str, Any]:
    """A body whose ``NUM`` is replaced by ``number``."""
    return {"content": text.replace("NUM", number).encode()}


@pytest.fixture(scope="module")
def servers(ts_server: Server, export_server: Server, embed_server: Server) -> dict[str, Server]:
    return {"ts": ts_server, "export": export_server, "embed": embed_server}


# (id, server, path, request kwargs, text the 400's message must contain)
RANK: list[tuple[str, str, str, dict[str, Any], str]] = [
    # A flattened image (rank 2) for a TorchScript CNN that declares [-1, 3, 16, 16].
    ("v2-ts-rank-2", "ts", "/v2/models/cnn/infer",
     {"content": cnn(shape=[1, N], data=[0.0] * N)},
     "inputs[0].shape must have 4 dimensions [-1, 3, 16, 16], got [1, 768]"),
    # One dimension too many (an extra leading axis some clients add).
    ("v2-ts-rank-5", "ts", "/v2/models/cnn/infer",
     {"content": cnn(shape=[1, 1, 3, 16, 16])},
     "inputs[0].shape must have 4 dimensions [-1, 3, 16, 16], got [1, 1, 3, 16, 16]"),
    # torch.export: the rank comes from the exported program's own input.
    ("v2-export-rank-3", "export", "/v2/models/cnn-export/infer",
     {"content": cnn("x", shape=[1, 3, 256], data=[0.0] * N), "headers": AUTH},
     "inputs[0].shape must have 4 dimensions [-1, 3, 16, 16], got [1, 3, 256]"),
    # Text models take one string per row (rank 1), not a matrix of strings.
    ("v2-text-rank-2", "embed", "/v2/models/minilm/infer",
     {"content": orjson.dumps({"inputs": [
         {"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]}]})},
     "inputs[0].shape must have 1 dimensions [-1], got [1, 1]"),
    # KServe v1: rows that are flat vectors for a CNN whose rows are [3, 16, 16].
    ("v1-ts-rows-rank-1", "ts", "/v1/models/cnn:predict",
     {"content": orjson.dumps({"instances": [[0.0] * N]})},
     "each row must have shape [3, 16, 16] for input 'input__0', got rows of shape [768]"),
    # KServe v1: scalars as rows (rank 1 in all).
    ("v1-export-scalar-rows", "export", "/v1/models/cnn-export:predict",
     {"content": orjson.dumps({"instances": [0.0, 1.0]}), "headers": AUTH},
     "each row must have shape [3, 16, 16] for input 'x', got rows of shape []"),
    # KServe v1: each text row a list (rank 2) instead of a string.
    ("v1-text-rows-rank-2", "embed", "/v1/models/minilm:predict",
     {"content": orjson.dumps({"instances": [["hi"]]})},
     "each row must have shape [] for input 'text', got rows of shape [1]"),
]  # fmt: skip

DIGIT_ROWS: list[tuple[str, str, str, dict[str, Any], str]] = [
    # The header int() turned into a ValueError: 500 on main.
    ("v2-header-length-5000-digits", "ts", "/v2/models/cnn/infer",
     {"content": b"{}", "headers": {"Inference-Header-Content-Length": DIGITS}},
     "Inference-Header-Content-Length must be an integer between 1 and the body length 2"),
    # 19 digits: bigger than any body, refused without building a huge int.
    ("v2-header-length-19-digits", "ts", "/v2/models/cnn/infer",
     {"content": b"{}", "headers": {"Inference-Header-Content-Length": "1" * 19}},
     "Inference-Header-Content-Length must be an integer between 1 and the body length 2"),
    # A dimension of 5000 digits in the JSON shape (the JSON parser refuses the number).
    ("v2-shape-dim-5000-digits", "ts", "/v2/models/cnn/infer",
     raw('{"inputs":[{"name":"input__0","shape":[1,3,16,NUM],"datatype":"FP32","data":[1]}]}'), "request body is not valid JSON"),
    # A dimension past 64 bits but under the parser's limit (a float, not an integer).
    ("v2-shape-dim-25-digits", "ts", "/v2/models/cnn/infer",
     raw('{"inputs":[{"name":"input__0","shape":[1,3,16,NUM],"datatype":"FP32","data":[1]}]}',
         "9" * 25), "inputs[0].shape must be a non-empty list of integers"),
    # binary_data_size of 5000 digits.
    ("v2-binary-size-5000-digits", "ts", "/v2/models/cnn/infer",
     raw('{"inputs":[{"name":"input__0","shape":[1,3,16,16],"datatype":"FP32",'
         '"parameters":{"binary_data_size":NUM}}]}'), "request body is not valid JSON"),
    # A data value of 5000 digits with a fraction.
    ("v2-data-5000-digits", "ts", "/v2/models/cnn/infer",
     raw('{"inputs":[{"name":"input__0","shape":[1,1,1,1],"datatype":"FP32","data":[1NUM.5]}]}'), "request body is not valid JSON"),
    # KServe v1 instance of 5000 digits.
    ("v1-instance-5000-digits", "ts", "/v1/models/cnn:predict",
     raw('{"instances":[NUM]}'), "request body is not valid JSON"),
    # OpenAI embeddings: dimensions of 5000 digits.
    ("openai-dimensions-5000-digits", "embed", "/v1/embeddings",
     raw('{"model":"minilm","input":"hi","dimensions":NUM}'),
     "request body is not valid JSON"),
]  # fmt: skip


def check_400(server: Server, path: str, kwargs: dict[str, Any], text: str) -> None:
    r = httpx.post(server.url + path, timeout=60, **kwargs)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    message = err["message"] if isinstance(err, dict) else err
    assert text in message, message


@pytest.mark.parametrize("row", RANK, ids=[r[0] for r in RANK])
def test_wrong_rank_names_the_expected_shape(
    servers: dict[str, Server], row: tuple[str, str, str, dict[str, Any], str]
) -> None:
    _, key, path, kwargs, text = row
    check_400(servers[key], path, kwargs, text)


@pytest.mark.parametrize("row", DIGIT_ROWS, ids=[r[0] for r in DIGIT_ROWS])
def test_thousands_of_digits_are_a_400(
    servers: dict[str, Server], row: tuple[str, str, str, dict[str, Any], str]
) -> None:
    _, key, path, kwargs, text = row
    check_400(servers[key], path, kwargs, text)


def raw_request(server: Server, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` as is (clients refuse to send such a Content-Length); status and body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.settimeout(5)
        try:
            while chunk := s.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data[9:12]), data


# (id, Content-Length value) - the HTTP parser or the runtime must refuse each with a 400.
CONTENT_LENGTHS = [
    # 5000 digits: int() would raise ValueError.
    ("5000-digits", DIGITS),
    # Past 64 bits.
    ("20-digits", "9" * 20),
]


@pytest.mark.parametrize(
    "value", [v for _, v in CONTENT_LENGTHS], ids=[i for i, _ in CONTENT_LENGTHS]
)
@pytest.mark.parametrize("path", ["/v2/models/cnn/infer", "/v1/models/cnn:predict"])
def test_content_length_of_many_digits_is_a_400(ts_server: Server, path: str, value: str) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {value}\r\nConnection: close\r\n\r\n{{}}"
    ).encode()
    status, data = raw_request(ts_server, head)
    assert status == 400, data[:500]
    assert httpx.get(f"{ts_server.url}/v2/health/ready", timeout=10).status_code == 200
