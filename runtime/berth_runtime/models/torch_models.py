"""TorchScript, ``torch.export`` and safetensors-plus-factory models.

Tensor names: inputs come from ``--inputs`` or ``berth.json`` when declared, else from the
exported program's argument names, else (a bare TorchScript file) from ``forward``'s
signature: every Tensor argument, FP32, any shape. Requests must use those names.
Outputs are ``output__0``, ``output__1``, ... unless ``--outputs``/berth.json name them. A model may return a tensor, a tuple or list of tensors, or a dict (outputs
then follow the dict's order and keys become the names).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from berth_runtime.datatypes import NUMPY, TORCH_TO_OIP
from berth_runtime.errors import ModelLoadError
from berth_runtime.export_check import check_pt2
from berth_runtime.manifest import Manifest, TensorSpec
from berth_runtime.models.base import ServedModel
from berth_runtime.safety import check_factory

log = logging.getLogger("berth.models")


def _flatten(out: Any) -> tuple[list[torch.Tensor], list[str] | None]:
    if isinstance(out, torch.Tensor):
        return [out], None
    if isinstance(out, dict):
        return [v for v in out.values()], [str(k) for k in out]
    if isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
        return list(out), None
    raise TypeError(f"model returned {type(out).__name__}; expected tensors")


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.cpu().numpy()


class TorchModel(ServedModel):
    """Any callable torch module with positional tensor inputs."""

    def __init__(
        self,
        name: str,
        module: Callable[..., Any],
        *,
        platform: str,
        device: torch.device,
        dtype: torch.dtype,
        inputs: tuple[TensorSpec, ...],
        output_names: tuple[str, ...] = (),
        fixed_batch: int | None = None,
        n_outputs: int = 0,
    ) -> None:
        if not inputs:
            raise ModelLoadError(
                f"{platform} model needs its inputs declared in berth.json, for example "
                '{"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]}'
            )
        self.name = name
        self.module = module
        self.platform = platform
        self.device = device
        self.dtype = dtype
        self.inputs = inputs
        self.outputs = ()
        self.output_names = output_names
        self.fixed_batch = fixed_batch
        self.n_outputs = n_outputs

    def _tensor(self, a: np.ndarray, spec: TensorSpec) -> torch.Tensor:
        t = torch.from_numpy(a)
        if spec.datatype == "BF16":
            t = t.view(torch.bfloat16)
        t = t.to(self.device, non_blocking=True)
        if t.is_floating_point() and t.dtype != self.dtype:
            t = t.to(self.dtype)
        return t

    def forward(self, inputs: list[np.ndarray]) -> tuple[list[torch.Tensor], list[str] | None]:
        tensors = [self._tensor(a, s) for a, s in zip(inputs, self.inputs, strict=True)]
        with torch.inference_mode():
            return _flatten(self.module(*tensors))

    def predict(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        outs, _ = self.forward(inputs)
        if self.outputs and len(outs) != len(self.outputs):
            raise RuntimeError(f"model returned {len(outs)} outputs, declared {len(self.outputs)}")
        return [_to_numpy(t) for t in outs]

    def _example(self, batch: int) -> list[np.ndarray]:
        arrays = []
        for spec in self.inputs:
            shape = (batch, *(d if d > 0 else 1 for d in spec.shape[1:]))
            arrays.append(np.zeros(shape, dtype=NUMPY[spec.datatype]))
        return arrays

    def warmup(self, max_batch_size: int) -> None:
        if any(not s.shape for s in self.inputs):
            # Shapes unknown (a bare TorchScript file): no example to run. Outputs come from
            # forward's declared return type; their datatypes and shapes from each reply.
            names = self.output_names or tuple(f"output__{i}" for i in range(self.n_outputs))
            self.outputs = tuple(TensorSpec(n, "FP32", ()) for n in names)
            log.info("input shapes not declared: warm-up skipped; declare them to warm up")
            return
        sizes = (
            [self.fixed_batch]
            if self.fixed_batch
            else sorted({min(2, max_batch_size), max_batch_size})
        )
        outs: list[torch.Tensor] = []
        keys: list[str] | None = None
        for size in sizes:
            try:
                outs, keys = self.forward(self._example(size))
            except Exception as exc:
                raise ModelLoadError(f"warm-up failed at batch size {size}: {exc}") from exc
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        free = any(d == -1 for s in self.inputs for d in s.shape[1:])
        specs = []
        for i, t in enumerate(outs):
            if self.output_names and i < len(self.output_names):
                name = self.output_names[i]
            elif keys:
                name = keys[i]
            else:
                name = f"output__{i}"
            dt = torch.float32 if t.dtype == torch.bfloat16 else t.dtype
            dims = tuple(-1 if free else int(d) for d in t.shape[1:])
            batch_dim = self.fixed_batch if self.fixed_batch else -1
            specs.append(TensorSpec(name, TORCH_TO_OIP.get(dt, "FP32"), (batch_dim, *dims)))
        self.outputs = tuple(specs)


def _find(path: Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    if path.is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
    if not found:
        raise ModelLoadError(f"no {what} file ({', '.join(suffixes)}) in {path}")
    return found


def _one(path: Path, suffixes: tuple[str, ...], what: str) -> Path:
    found = _find(path, suffixes, what)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ModelLoadError(f"several {what} files in {path} ({names}); keep exactly one")
    return found[0]


def load_torchscript(
    name: str, path: Path, manifest: Manifest, device: torch.device, dtype: torch.dtype
) -> TorchModel:
    file = _one(path, (".pt", ".pth", ".ts", ".torchscript", ".jit"), "TorchScript")
    try:
        module = torch.jit.load(str(file), map_location=device)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise ModelLoadError(f"{file.name} is not a TorchScript archive: {exc}") from exc
    module.eval()
    if dtype != torch.float32:
        module = module.to(dtype)
    inputs, n_outputs = manifest.inputs, 0
    if not inputs:
        inputs, n_outputs = signature_specs(module, file.name)
        if manifest.output_names and len(manifest.output_names) != n_outputs:
            raise ModelLoadError(
                f"{len(manifest.output_names)} output names declared; {file.name}'s forward "
                f"returns {n_outputs} tensors"
            )
        log.info("%s has no declared inputs; from forward: %s", file.name, [s.name for s in inputs])
    return TorchModel(
        name,
        module,
        platform="pytorch_torchscript",
        device=device,
        dtype=dtype,
        inputs=inputs,
        output_names=manifest.output_names,
        n_outputs=n_outputs,
    )


def signature_specs(module: Any, file: str) -> tuple[tuple[TensorSpec, ...], int]:
    """Inputs (FP32, any shape) and the output count from a TorchScript ``forward`` schema."""
    try:
        schema = module.forward.schema
    except AttributeError:
        raise ModelLoadError(f"{file} has no scripted forward; declare inputs") from None
    specs: list[TensorSpec] = []
    for arg in schema.arguments[1:]:  # [0] is self
        if str(arg.type) == "Tensor":
            specs.append(TensorSpec(arg.name, "FP32", ()))
        elif not arg.has_default_value():
            raise ModelLoadError(
                f"{file}: forward argument {arg.name!r} is {arg.type}, not a Tensor; only "
                "Tensor arguments can be served (others need a default)"
            )
    if not specs:
        raise ModelLoadError(f"{file}: forward takes no Tensor arguments")
    returns = [str(r.type) for r in schema.returns]
    ret = schema.returns[0].type if len(schema.returns) == 1 else None
    if returns == ["Tensor"]:
        n = 1
    elif (
        ret is not None
        and ret.kind() == "TupleType"
        and all(str(e) == "Tensor" for e in ret.elements())
    ):
        n = len(ret.elements())
    else:
        raise ModelLoadError(
            f"{file}: forward returns {returns}; without declared input shapes only a Tensor "
            "or a tuple of Tensors can be served. Declare inputs with shapes (--inputs or "
            "berth.json) so a warm-up pass finds the outputs"
        )
    return tuple(specs), n


def _export_specs(ep: Any) -> tuple[tuple[TensorSpec, ...], int | None]:
    """Input specs from an ExportedProgram's placeholders; a static batch dim is returned."""
    user_inputs = list(ep.graph_signature.user_inputs)
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    specs: list[TensorSpec] = []
    fixed: int | None = None
    for arg in user_inputs:
        val = nodes[arg].meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise ModelLoadError(f"exported input {arg!r} is not a tensor; only tensor inputs work")
        dims = [int(d) if isinstance(d, int) else -1 for d in val.shape]
        if not dims:
            raise ModelLoadError(f"exported input {arg!r} is a scalar; inputs need a batch dim")
        if dims[0] != -1:
            fixed = dims[0]
        dt = TORCH_TO_OIP.get(val.dtype)
        if dt is None:
            raise ModelLoadError(f"exported input {arg!r} has unsupported dtype {val.dtype}")
        specs.append(TensorSpec(arg, dt, (dims[0], *dims[1:])))
    return tuple(specs), fixed


def load_export(
    name: str, path: Path, manifest: Manifest, device: torch.device, dtype: torch.dtype
) -> TorchModel:
    file = _one(path, (".pt2",), "torch.export")
    check_pt2(file)  # refuses pickled, opaque and native-code entries before torch reads any
    try:
        ep = torch.export.load(str(file))
    except Exception as exc:
        raise ModelLoadError(f"{file.name} is not a torch.export program: {exc}") from exc
    specs, fixed = _export_specs(ep)
    if manifest.inputs:
        if len(manifest.inputs) != len(specs):
            raise ModelLoadError(
                f"berth.json declares {len(manifest.inputs)} inputs, the program takes {len(specs)}"
            )
        specs = tuple(
            TensorSpec(m.name, s.datatype, s.shape)
            for m, s in zip(manifest.inputs, specs, strict=True)
        )
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        ep = move_to_device_pass(ep, device)
    module = ep.module()
    if dtype != torch.float32:
        module = module.to(dtype)
    return TorchModel(
        name,
        module,
        platform="pytorch_export",
        device=device,
        dtype=dtype,
        inputs=specs,
        output_names=manifest.output_names,
        fixed_batch=fixed,
    )


def import_factory(ref: str, allow: tuple[str, ...]) -> Callable[..., Any]:
    """Import ``module:function``; the module must be under an allowed prefix and importable."""
    check_factory(ref, allow)
    mod_name, _, fn_name = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import factory {ref!r}: {exc}") from exc
    if not callable(fn):
        raise ModelLoadError(f"factory {ref!r} is not callable")
    return fn  # type: ignore[no-any-return]


def load_safetensors(
    name: str,
    path: Path,
    manifest: Manifest,
    device: torch.device,
    dtype: torch.dtype,
    factory: str | None,
    factory_allow: tuple[str, ...] = (),
) -> TorchModel:
    """Weights from safetensors, module from ``factory``, which comes only from the command
    line (the ModelDeployment), never from the model folder, and must be allow-listed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if manifest.factory and manifest.factory != factory:
        raise ModelLoadError(
            f"berth.json names factory {manifest.factory!r}; a model folder cannot choose code "
            "to run. Pass --factory (spec.model.factory) instead"
        )
    ref = factory
    if not ref:
        raise ModelLoadError("safetensors models need --factory module:function")
    check_factory(ref, factory_allow)
    state: dict[str, torch.Tensor] = {}
    for file in _find(path, (".safetensors",), "safetensors"):
        try:
            state.update(load_file(str(file), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{file.name} is not a valid safetensors file: {exc}") from exc
    module = import_factory(ref, factory_allow)(**manifest.factory_kwargs)
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"factory {ref!r} returned {type(module).__name__}, not an nn.Module")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"weights do not fit the factory's module: {exc}") from exc
    module = module.to(device=device, dtype=dtype).eval()
    return TorchModel(
        name,
        module,
        platform="pytorch_safetensors",
        device=device,
        dtype=dtype,
        inputs=manifest.inputs,
        output_names=manifest.output_names,
    )
