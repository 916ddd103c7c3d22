"""No code from model files: pickled torch.export entries, berth.json factories, foreign
sentence-transformers module classes and unlisted factories are refused before they run."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from berth_runtime.errors import ModelLoadError
from berth_runtime.export_check import check_pt2
from berth_runtime.manifest import Manifest, TensorSpec
from berth_runtime.models import torch_models
from berth_runtime.models.loader import check_sentence_transformers_modules
from berth_runtime.safety import factory_allowed
from runtime_helpers import REPO, minilm_dir

pytestmark = pytest.mark.unit

SPEC = (TensorSpec("x", "FP32", (-1, 4)),)


class Evil:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def _real_export(dest: Path) -> Path:
    import berth_test_models as m

    m.write_export(m.small_cnn(), dest)
    return dest / "model.pt2"


def _rewrite(src: Path, dst: Path, edit: dict[str, bytes]) -> None:
    """Copy a zip, replacing the named entries' bytes (same order, same compression)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit.get(info.filename, zin.read(info)))


def _pickled_weight_archive(src: Path, dst: Path, marker: Path) -> None:
    """A real torch.export archive whose first weight is stored the way torch stores a
    tensor subclass: ``use_pickle: true`` and a torch.save payload (here a hostile one)."""
    with zipfile.ZipFile(src) as z:
        cfg_name = next(n for n in z.namelist() if n.endswith("_weights_config.json"))
        cfg = json.loads(z.read(cfg_name))
    meta = next(iter(cfg["config"].values()))
    meta["use_pickle"] = True
    buf = io.BytesIO()
    torch.save({"w": Evil(marker)}, buf)
    root = cfg_name.split("/")[0]
    _rewrite(
        src,
        dst,
        {
            cfg_name: json.dumps(cfg).encode(),
            f"{root}/data/weights/{meta['path_name']}": buf.getvalue(),
        },
    )


def test_pickled_export_entry_is_refused_and_would_have_run(tmp_path: Path) -> None:
    real = _real_export(tmp_path / "real")
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    marker = tmp_path / "pwned"
    _pickled_weight_archive(real, evil_dir / "model.pt2", marker)

    with pytest.raises(ModelLoadError, match=r"is pickled; Berth never unpickles"):
        torch_models.load_export("m", evil_dir, Manifest(), torch.device("cpu"), torch.float32)
    assert not marker.exists()

    # The crafted archive is a real attack: torch.export.load on its own runs the payload
    # (in a child process, so this one stays clean).
    code = f"import torch; torch.export.load({str(evil_dir / 'model.pt2')!r})"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False)
    assert marker.exists(), "the crafted archive did not carry a live pickle; test is void"


def test_real_export_without_pickles_loads(tmp_path: Path) -> None:
    _real_export(tmp_path / "ok")
    check_pt2(tmp_path / "ok" / "model.pt2")
    model = torch_models.load_export(
        "m", tmp_path / "ok", Manifest(), torch.device("cpu"), torch.float32
    )
    model.warmup(2)
    assert model.inputs[0].name == "x" and model.outputs[0].shape == (-1, 10)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("data/aotinductor/model/x.so", "AOTInductor native code"),
        ("data/weights/model.pt", "pickled legacy payload"),
    ],
)
def test_export_native_and_legacy_entries_are_refused(
    tmp_path: Path, entry: str, message: str
) -> None:
    real = _real_export(tmp_path / "real")
    bad = tmp_path / "bad.pt2"
    shutil.copy(real, bad)
    with zipfile.ZipFile(bad, "a") as z:
        z.writestr(f"model/{entry}", b"\0")
    with pytest.raises(ModelLoadError, match=message):
        check_pt2(bad)


def test_export_opaque_constant_is_refused(tmp_path: Path) -> None:
    real = _real_export(tmp_path / "real")
    with zipfile.ZipFile(real) as z:
        cfg_name = next(n for n in z.namelist() if n.endswith("_constants_config.json"))
    cfg = {"config": {"c": {"path_name": "opaque_obj_0", "use_pickle": False}}}
    _rewrite(real, tmp_path / "bad.pt2", {cfg_name: json.dumps(cfg).encode()})
    with pytest.raises(ModelLoadError, match="opaque or custom object"):
        check_pt2(tmp_path / "bad.pt2")


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "model.pt2"
    f.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelLoadError, match=r"not a torch\.export archive"):
        check_pt2(f)


def test_berth_json_factory_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    marker = tmp_path / "ran"
    with pytest.raises(ModelLoadError, match="a model folder cannot choose code"):
        torch_models.load_safetensors(
            "m",
            d,
            Manifest(SPEC, factory=f"os:system --touch {marker}"),
            torch.device("cpu"),
            torch.float32,
            None,
            ("berth_test_models",),
        )
    assert not marker.exists()


@pytest.mark.parametrize(
    ("ref", "allow", "ok"),
    [
        ("berth_test_models:build", ("berth_test_models",), True),
        ("pkg.sub.mod:build", ("pkg",), True),
        ("pkg_evil:build", ("pkg",), False),
        ("os:system", (), False),
        ("subprocess:run", ("pkg", "my_models"), False),
    ],
)
def test_factory_allowlist(ref: str, allow: tuple[str, ...], ok: bool) -> None:
    assert factory_allowed(ref, allow) is ok


def test_unlisted_factory_is_refused_before_import(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    with pytest.raises(ModelLoadError, match=r"not allowed.*--factory-allow"):
        torch_models.load_safetensors(
            "m", d, Manifest(SPEC), torch.device("cpu"), torch.float32, "os:system", ()
        )


def test_foreign_sentence_transformers_module_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "st"
    shutil.copytree(minilm_dir(), d)
    modules = json.loads((d / "modules.json").read_text())
    check_sentence_transformers_modules(d)  # the real one passes
    modules[0]["type"] = "modeling_evil.Backdoor"
    (d / "modules.json").write_text(json.dumps(modules))
    (d / "modeling_evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    with pytest.raises(ModelLoadError, match="cannot choose code to run"):
        check_sentence_transformers_modules(d)
    # sentence-transformers itself (>= 6.0, the floor in pyproject.toml) refuses it too.
    from sentence_transformers import SentenceTransformer

    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(d), device="cpu", local_files_only=True, trust_remote_code=False)
    assert not (tmp_path / "ran").exists()


def test_sentence_transformers_floor() -> None:
    text = (REPO / "runtime" / "pyproject.toml").read_text()  # the runtime's own package
    assert '"sentence-transformers>=6.0"' in text


def test_loading_forces_weights_only_even_for_weights_only_false(tmp_path: Path) -> None:
    # After the loader ran, a library calling torch.load(weights_only=False) on a hostile
    # file (as torch.export's own loader does) still gets the weights-only unpickler.
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"w": Evil(marker)}, buf)
    evil.write_bytes(buf.getvalue())
    code = f"""
import torch
from berth_runtime.models.loader import load_model
from berth_runtime.settings import Settings
try:
    load_model(Settings(model_uri={str(tmp_path / "none")!r}, format="torchscript", name="m"),
               torch.device("cpu"))
except Exception as exc:
    print("load refused:", type(exc).__name__)
try:
    torch.load({str(evil)!r}, weights_only=False)
    print("UNPICKLED")
except Exception as exc:
    print("refused:", type(exc).__name__)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "refused: UnpicklingError" in out.stdout, out.stdout + out.stderr
    assert not marker.exists()
