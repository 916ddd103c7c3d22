"""The test CNN over OIP v2 (tritonclient, JSON and binary) and KServe v1 (httpx)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from runtime_helpers import TOKEN, Server

pytestmark = pytest.mark.integration


def expected(cnn: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return cnn(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]


def triton_infer(
    server: Server,
    name: str,
    x: np.ndarray,
    binary: bool,
    input_name: str = "input__0",
    **kw: object,
) -> np.ndarray:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        inp = triton.InferInput(input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = triton.InferRequestedOutput("output__0", binary_data=binary)
        result = client.infer(name, [inp], outputs=[out], **kw)  # type: ignore[arg-type]
        return result.as_numpy("output__0")  # type: ignore[no-any-return]
    finally:
        client.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_torchscript_matches_direct_call(
    ts_server: Server, cnn: torch.nn.Module, binary: bool
) -> None:
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16), dtype=np.float32)
    got = triton_infer(ts_server, "cnn", x, binary)
    np.testing.assert_allclose(got, expected(cnn, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_export_matches_direct_call(
    export_server: Server, cnn: torch.nn.Module, binary: bool
) -> None:
    x = np.random.default_rng(2).standard_normal((5, 3, 16, 16), dtype=np.float32)
    got = triton_infer(
        export_server, "cnn-export", x, binary, "x", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    np.testing.assert_allclose(got, expected(cnn, x), rtol=1e-4, atol=1e-5)


def test_tritonclient_health_and_metadata(ts_server: Server) -> None:
    client = triton.InferenceServerClient(ts_server.url.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("cnn")
        assert not client.is_model_ready("nope")
        meta = client.get_model_metadata("cnn")
    finally:
        client.close()
    assert meta["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": [-1, 3, 16, 16]}]
    assert meta["outputs"] == [{"name": "output__0", "datatype": "FP32", "shape": [-1, 10]}]


def test_default_outputs_are_binary(ts_server: Server, cnn: torch.nn.Module) -> None:
    """With no outputs listed, tritonclient asks for binary_data_output; as_numpy decodes it."""
    x = np.ones((2, 3, 16, 16), dtype=np.float32)
    client = triton.InferenceServerClient(ts_server.url.removeprefix("http://"))
    try:
        inp = triton.InferInput("input__0", [2, 3, 16, 16], "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("cnn", [inp])
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy("output__0"), expected(cnn, x), rtol=1e-4, atol=1e-5)


def test_kserve_v1(ts_server: Server, cnn: torch.nn.Module) -> None:
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16), dtype=np.float32)
    status = httpx.get(f"{ts_server.url}/v1/models/cnn")
    assert status.json() == {"name": "cnn", "ready": True}
    r = httpx.post(f"{ts_server.url}/v1/models/cnn:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        np.array(r.json()["predictions"]), expected(cnn, x), rtol=1e-4, atol=1e-5
    )


def test_auth_required(export_server: Server) -> None:
    url = f"{export_server.url}/v2/models/cnn-export"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(f"{export_server.url}/v2/health/ready").status_code == 200  # probes stay open
    r = httpx.post(f"{export_server.url}/v2/models/cnn-export/infer", content=b"{}")
    assert r.status_code == 401 and "error" in r.json()


def test_export_metadata_uses_program_names(export_server: Server) -> None:
    r = httpx.get(
        f"{export_server.url}/v2/models/cnn-export", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    meta = r.json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 16, 16]}]
    assert meta["outputs"][0]["shape"] == [-1, 10]


def test_metrics_exposed(ts_server: Server) -> None:
    text = httpx.get(f"{ts_server.url}/metrics").text
    for name in (
        "berth_requests_total",
        "berth_request_duration_seconds_bucket",
        "berth_queue_wait_seconds_bucket",
        "berth_batch_size_bucket",
        "berth_inflight_requests",
        "berth_queue_depth",
        "berth_model_load_seconds",
    ):
        assert name in text, name
