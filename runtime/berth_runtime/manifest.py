"""The optional ``berth.json`` manifest next to the model file, inline specs, tensor specs.

Torch-free, so settings can validate ``--inputs``/``--outputs`` before torch is imported.
Inline specs (``--inputs``/``--outputs``, from a ModelDeployment's ``spec.model.inputs``/
``outputs``) take precedence over ``berth.json``. Example berth.json::

    {
      "inputs":  [{"name": "input__0", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
      "outputs": [{"name": "output__0"}],
      "factory_kwargs": {"classes": 10}
    }

The first dimension of every tensor is the batch dimension and is reported as -1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from berth_runtime.errors import ModelLoadError

MANIFEST_NAME = "berth.json"
DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
)  # fmt: skip
"""The OIP datatypes Berth serves (the keys of ``datatypes.NUMPY``)."""


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
    if datatype not in DATATYPES:
        raise ModelLoadError(
            f"{where}.datatype must be one of {sorted(DATATYPES)}, got {datatype!r}"
        )
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and (d == -1 or d > 0) for d in shape)
    ):
        raise ModelLoadError(f"{where}.shape must be a list of positive ints or -1")
    return TensorSpec(name, datatype, (-1, *shape[1:]))


def _unique(specs: tuple[Any, ...], where: str) -> None:
    names = [s if isinstance(s, str) else s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ModelLoadError(f"{where} names {dup} more than once")


def parse_inputs(raw: Any, where: str) -> tuple[TensorSpec, ...]:
    """A list of {name, datatype (FP32), shape} objects, as in berth.json or ``--inputs``."""
    if not isinstance(raw, list):
        raise ModelLoadError(f"{where} must be a list of {{name, datatype, shape}} objects")
    specs = tuple(_spec(x, f"{where}[{i}]") for i, x in enumerate(raw))
    _unique(specs, where)
    return specs


def parse_outputs(raw: Any, where: str) -> tuple[str, ...]:
    """Output names from a list of names or {name, ...} objects."""
    if not isinstance(raw, list):
        raise ModelLoadError(f"{where} must be a list of {{name}} objects")
    names: list[str] = []
    for i, out in enumerate(raw):
        name = out.get("name") if isinstance(out, dict) else out
        if not isinstance(name, str) or not name:
            raise ModelLoadError(f"{where}[{i}].name must be a non-empty string")
        if isinstance(out, dict) and "datatype" in out and out["datatype"] not in DATATYPES:
            raise ModelLoadError(
                f"{where}[{i}].datatype must be one of {sorted(DATATYPES)}, got {out['datatype']!r}"
            )
        names.append(name)
    _unique(tuple(names), where)
    return tuple(names)


def inline_specs(
    inputs_json: str | None, outputs_json: str | None
) -> tuple[tuple[TensorSpec, ...], tuple[str, ...]]:
    """Parse ``--inputs``/``--outputs`` JSON; errors name the flag."""
    specs: tuple[TensorSpec, ...] = ()
    names: tuple[str, ...] = ()
    for flag, raw in (("--inputs", inputs_json), ("--outputs", outputs_json)):
        if raw is None:
            continue
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ModelLoadError(f"{flag} is not valid JSON: {exc}") from None
        if flag == "--inputs":
            specs = parse_inputs(doc, flag)
        else:
            names = parse_outputs(doc, flag)
    return specs, names


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
    inputs = parse_inputs(raw.get("inputs", []), f"{MANIFEST_NAME} inputs")
    names = parse_outputs(raw.get("outputs", []), f"{MANIFEST_NAME} outputs")
    factory = raw.get("factory")
    kwargs = raw.get("factory_kwargs", {})
    if factory is not None and not isinstance(factory, str):
        raise ModelLoadError(f"{MANIFEST_NAME} factory must be a 'module:function' string")
    if not isinstance(kwargs, dict):
        raise ModelLoadError(f"{MANIFEST_NAME} factory_kwargs must be an object")
    return Manifest(inputs, names, factory, kwargs)
