"""The optional ``berth.json`` manifest next to the model file, and tensor specs.

Example (TorchScript needs ``inputs`` because a scripted module does not record shapes)::

    {
      "inputs":  [{"name": "input__0", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
      "outputs": [{"name": "output__0"}],
      "factory": "my_models.cnn:build",
      "factory_kwargs": {"classes": 10}
    }

The first dimension of every tensor is the batch dimension and is reported as -1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from berth_runtime.datatypes import NUMPY
from berth_runtime.errors import ModelLoadError

MANIFEST_NAME = "berth.json"


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: OIP datatype and shape with -1 for the batch and free dims."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Manifest:
    """What berth.json may say; every field optional."""

    inputs: tuple[TensorSpec, ...] = ()
    output_names: tuple[str, ...] = ()
    factory: str | None = None
    factory_kwargs: dict[str, Any] = field(default_factory=dict)


def _spec(raw: Any, where: str) -> TensorSpec:
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{where} must be an object")
    name = raw.get("name")
    datatype = raw.get("datatype", "FP32")
    shape = raw.get("shape")
    if not isinstance(name, str) or not name:
        raise ModelLoadError(f"{where}.name must be a non-empty string")
    if datatype not in NUMPY:
        raise ModelLoadError(f"{where}.datatype must be one of {sorted(NUMPY)}, got {datatype!r}")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and (d == -1 or d > 0) for d in shape)
    ):
        raise ModelLoadError(f"{where}.shape must be a list of positive ints or -1")
    return TensorSpec(name, datatype, (-1, *shape[1:]))


def read_manifest(model_path: Path) -> Manifest:
    """Read berth.json from the model directory (or beside the model file), if present."""
    base = model_path if model_path.is_dir() else model_path.parent
    path = base / MANIFEST_NAME
    if not path.is_file():
        return Manifest()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: must be a JSON object")
    inputs = tuple(
        _spec(x, f"{MANIFEST_NAME} inputs[{i}]") for i, x in enumerate(raw.get("inputs", []))
    )
    outputs = raw.get("outputs", [])
    names: list[str] = []
    for i, out in enumerate(outputs):
        name = out.get("name") if isinstance(out, dict) else out
        if not isinstance(name, str):
            raise ModelLoadError(f"{MANIFEST_NAME} outputs[{i}].name must be a string")
        names.append(name)
    factory = raw.get("factory")
    kwargs = raw.get("factory_kwargs", {})
    if factory is not None and not isinstance(factory, str):
        raise ModelLoadError(f"{MANIFEST_NAME} factory must be a 'module:function' string")
    if not isinstance(kwargs, dict):
        raise ModelLoadError(f"{MANIFEST_NAME} factory_kwargs must be an object")
    return Manifest(inputs, tuple(names), factory, kwargs)
