"""A bare TorchScript file (no berth.json) serves with inputs from forward's signature;
inline --inputs/--outputs take precedence over berth.json. Real servers, real clients."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from runtime_helpers import Server

pytestmark = pytest.mark.integration

INLINE_IN = [
    {"name": "image", "datatype": "FP32", "shape": [-1, 4]},
    {"name": "offset", "datatype": "INT8", "shape": [-1, 4]},
]


@pytest.fixture(scope="module")
def pair_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    import berth_test_models as m

    root = tmp_path_factory.mktemp("bare")
    m.write_bare_pair(root / "bare")
    m.write_bare_pair(root / "declared")
    # berth.json says one thing; the inline flags (what the operator passes) win.
    (root / "declared" / "berth.json").write_text(
        json.dumps({"inputs": [{"name": "wrong", "shape": [-1, 9]}], "outputs": ["nope"]})
    )
    common = ["--format", "torchscript", "--max-batch-size", "4"]
    servers = {
        "bare": Server(
            ["--model-uri", str(root / "bare" / "pair.pt"), "--name", "pair", *common],
            root / "bare.log",
        ),
        "inline": Server(
            [
                "--model-uri",
                str(root / "declared"),
                "--name",
                "pair",
                *common,
                "--inputs",
                json.dumps(INLINE_IN),
                "--outputs",
                '[{"name": "total"}]',
            ],
            root / "inline.log",
        ),
    }
    try:
        yield {k: s.wait_ready() for k, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()


def test_bare_file_metadata_from_forward(pair_servers: dict[str, Server]) -> None:
    meta = httpx.get(f"{pair_servers['bare'].url}/v2/models/pair").json()
    assert meta["inputs"] == [
        {"name": "left", "datatype": "FP32", "shape": []},
        {"name": "right", "datatype": "FP32", "shape": []},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["output__0"]


@pytest.mark.parametrize("shape", [(2, 3), (1, 2, 5)])
def test_bare_file_serves_any_shape_with_tritonclient(
    pair_servers: dict[str, Server], shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape, dtype=np.float32)
    b = rng.standard_normal(shape, dtype=np.float32)
    client = triton.InferenceServerClient(pair_servers["bare"].url.removeprefix("http://"))
    try:
        inputs = []
        for name, x in (("left", a), ("right", b)):
            inp = triton.InferInput(name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            inputs.append(inp)
        got = client.infer("pair", inputs).as_numpy("output__0")
    finally:
        client.close()
    np.testing.assert_allclose(got, a + b, rtol=1e-6)


def test_bare_file_refuses_wrong_names(pair_servers: dict[str, Server]) -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    r = httpx.post(f"{pair_servers['bare'].url}/v2/models/pair/infer", json=body)
    assert r.status_code == 400
    assert (
        r.json()["error"] == "inputs[0].name 'x' is not an input; expected one of ['left', 'right']"
    )


def test_inline_specs_override_berth_json(pair_servers: dict[str, Server]) -> None:
    url = pair_servers["inline"].url
    meta = httpx.get(f"{url}/v2/models/pair").json()
    assert meta["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "offset", "datatype": "INT8", "shape": [-1, 4]},
    ]
    assert meta["outputs"] == [{"name": "total", "datatype": "FP32", "shape": [-1, 4]}]
    r = httpx.post(
        f"{url}/v1/models/pair:predict",
        json={"instances": [{"image": [1.0, 2.0, 3.0, 4.0], "offset": [1, -1, 0, 127]}]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [[2.0, 1.0, 3.0, 131.0]]}
    # berth.json's input name no longer exists.
    body = {"inputs": [{"name": "wrong", "shape": [1, 9], "datatype": "FP32", "data": [0.0] * 9}]}
    assert httpx.post(f"{url}/v2/models/pair/infer", json=body).status_code == 400
