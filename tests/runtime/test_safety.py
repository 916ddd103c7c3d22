"""Never unpickle: crafted pickles are refused by every loader and never run."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
from berth_runtime.errors import ModelLoadError
from berth_runtime.manifest import Manifest, TensorSpec
from berth_runtime.models import torch_models
from berth_runtime.safety import UNSAFE_ENV, safe_torch_load
from runtime_helpers import BIN

pytestmark = pytest.mark.unit

SPEC = (TensorSpec("x", "FP32", (-1, 4)),)


class Evil:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def evil_bytes(marker: Path) -> bytes:
    return pickle.dumps({"weights": Evil(marker)})


def evil_torch_zip(marker: Path) -> bytes:
    """A torch.save-format zip whose data.pkl carries the payload."""
    buf = io.BytesIO()
    torch.save({"weights": Evil(marker)}, buf)
    return buf.getvalue()


def evil_torchscript(tmp: Path, marker: Path) -> bytes:
    """A real TorchScript archive with its data.pkl replaced by the payload."""
    src = tmp / "real.pt"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(torch.nn.Linear(4, 2)).save(str(src))
    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/data.pkl"):
                data = evil_bytes(marker)
            zout.writestr(info, data)
    return out.getvalue()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


@pytest.mark.parametrize("payload", ["raw-pickle", "torch-zip"])
def test_safe_torch_load_refuses(tmp_path: Path, marker: Path, payload: str) -> None:
    f = tmp_path / "weights.pt"
    f.write_bytes(evil_bytes(marker) if payload == "raw-pickle" else evil_torch_zip(marker))
    with pytest.raises(ModelLoadError):
        safe_torch_load(f)
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["raw-pickle", "torch-zip", "torchscript-data-pkl"])
def test_torchscript_loader_refuses(tmp_path: Path, marker: Path, payload: str) -> None:
    d = tmp_path / "m"
    d.mkdir()
    data = {
        "raw-pickle": lambda: evil_bytes(marker),
        "torch-zip": lambda: evil_torch_zip(marker),
        "torchscript-data-pkl": lambda: evil_torchscript(tmp_path, marker),
    }[payload]()
    (d / "model.pt").write_bytes(data)
    with pytest.raises(ModelLoadError):
        torch_models.load_torchscript("m", d, Manifest(SPEC), torch.device("cpu"), torch.float32)
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["raw-pickle", "torch-zip"])
def test_export_loader_refuses(tmp_path: Path, marker: Path, payload: str) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.pt2").write_bytes(
        evil_bytes(marker) if payload == "raw-pickle" else evil_torch_zip(marker)
    )
    with pytest.raises(ModelLoadError):
        torch_models.load_export("m", d, Manifest(), torch.device("cpu"), torch.float32)
    assert not marker.exists()


def test_safetensors_loader_refuses_pickle(tmp_path: Path, marker: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.safetensors").write_bytes(evil_bytes(marker))
    with pytest.raises(ModelLoadError):
        torch_models.load_safetensors(
            "m",
            d,
            Manifest(SPEC),
            torch.device("cpu"),
            torch.float32,
            "berth_test_models:build_slow_double",
            ("berth_test_models",),
        )
    assert not marker.exists()


def test_server_refuses_to_start_when_weights_only_is_disabled(tmp_path: Path) -> None:
    env = {**os.environ, UNSAFE_ENV: "1"}
    proc = subprocess.run(
        [str(BIN), "serve", "--model-uri", str(tmp_path), "--format", "torchscript", "--name", "m"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert UNSAFE_ENV in proc.stderr
