"""The s3:// source against a real S3-compatible server (versitygw), not a mock.

Credentials come from the environment only (in a pod: the Secret the ModelDeployment
names, injected by reference; tests/operator/test_operator_hardening.py covers that leg).
Needs boto3 (the `s3` extra): without it these tests fail with that message, never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from berth_runtime import sources
from berth_runtime.archives import Limits
from berth_runtime.errors import ModelLoadError
from runtime_helpers import Server
from s3server import S3, s3_server

pytestmark = pytest.mark.integration

BUCKET = "models"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[S3]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        server.upload_dir(BUCKET, "cnn", model_dir / "ts")
        yield server


def _use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    # Nothing from this machine's own AWS setup may leak in: only what a pod would get.
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_runtime_serves_a_model_from_s3(s3: S3, cnn: torch.nn.Module, tmp_path: Path) -> None:
    server = Server(
        ["--model-uri", f"s3://{BUCKET}/cnn/", "--format", "torchscript", "--name", "cnn",
         "--cache-dir", str(tmp_path / "cache")],
        tmp_path / "runtime.log", env=s3.env(),
    )  # fmt: skip
    try:
        server.wait_ready()
        x = np.random.default_rng(5).standard_normal((2, 3, 16, 16), dtype=np.float32)
        r = httpx.post(f"{server.url}/v1/models/cnn:predict", json={"instances": x.tolist()})
        assert r.status_code == 200, r.text
        with torch.inference_mode():
            want = cnn(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(np.array(r.json()["predictions"]), want, rtol=1e-4, atol=1e-5)
    finally:
        server.stop()
    assert (tmp_path / "cache" / "objects").is_dir()  # fetched into the cache, not read in place


# (environment change, words the error must contain) -- why
REFUSALS = [
    # a wrong secret key: the server refuses the signature
    ({"AWS_SECRET_ACCESS_KEY": "wrong"}, "access denied"),
    # no credentials at all, and the node's metadata service off: never the node's identity
    ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, "no s3 credentials"),
]


@pytest.mark.parametrize(("change", "words"), REFUSALS)
def test_s3_refusals_are_clear(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, str], words: str
) -> None:
    _use_env(monkeypatch, {**s3.env(), **change})
    for key, value in change.items():
        if not value:
            monkeypatch.delenv(key)
    with pytest.raises(ModelLoadError, match=words):
        sources.resolve(f"s3://{BUCKET}/cnn/", tmp_path / "cache", tmp_path / "pvc")


def test_s3_missing_object_and_download_cap(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_env(monkeypatch, s3.env())
    with pytest.raises(ModelLoadError, match="no such object or prefix"):
        sources.resolve(f"s3://{BUCKET}/absent/", tmp_path / "cache", tmp_path / "pvc")
    with pytest.raises(ModelLoadError, match="over the download limit"):
        sources.resolve(
            f"s3://{BUCKET}/cnn/", tmp_path / "cache", tmp_path / "pvc",
            Limits(max_download_bytes=100),
        )  # fmt: skip
