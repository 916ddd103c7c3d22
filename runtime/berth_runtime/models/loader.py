"""Dispatch on ``--format``: resolve the URI, read berth.json, load, return a ServedModel.

Inline specs from the settings (``--inputs``/``--outputs``) replace berth.json's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import torch

from berth_runtime import sources
from berth_runtime.datatypes import TORCH_DTYPES
from berth_runtime.errors import ModelLoadError
from berth_runtime.manifest import read_manifest
from berth_runtime.models.base import ServedModel
from berth_runtime.safety import force_weights_only
from berth_runtime.settings import Settings

log = logging.getLogger("berth.models")


def load_model(settings: Settings, device: torch.device) -> ServedModel:
    """Fetch, unpack and load the model named by settings (does not warm it up)."""
    return load_fetched(settings, fetch_model(settings), device)


def fetch_model(settings: Settings) -> Path:
    """The start-up phase Fetching: the model URI as a local path (downloaded, unpacked)."""
    force_weights_only(os.environ)  # before anything else, even when the fetch fails
    cache = Path(settings.cache_dir)
    return sources.resolve(
        settings.model_uri, cache, Path(settings.pvc_root), sources.limits(settings)
    )


def load_fetched(settings: Settings, path: Path, device: torch.device) -> ServedModel:
    """The start-up phase Loading: the fetched model read onto the device (no warm-up)."""
    force_weights_only(os.environ)
    dtype = TORCH_DTYPES[settings.dtype]
    manifest = read_manifest(path)
    if settings.inputs:
        manifest = dataclasses.replace(manifest, inputs=settings.inputs)
    if settings.output_names:
        manifest = dataclasses.replace(manifest, output_names=settings.output_names)
    log.info("loading %s model %r from %s on %s", settings.format, settings.name, path, device)
    if settings.format == "sentence-transformers":
        from berth_runtime.models.text import TextEmbeddingModel

        check_sentence_transformers_modules(path)
        return TextEmbeddingModel(settings.name, path, device, dtype)
    if settings.format == "transformers":
        from berth_runtime.llm.model import CausalLM

        return CausalLM(settings, path, device, dtype)
    from berth_runtime.models import torch_models

    if settings.format == "torchscript":
        return torch_models.load_torchscript(settings.name, path, manifest, device, dtype)
    if settings.format == "torch-export":
        return torch_models.load_export(settings.name, path, manifest, device, dtype)
    if settings.format == "safetensors":
        return torch_models.load_safetensors(
            settings.name, path, manifest, device, dtype, settings.factory, settings.factory_allow
        )
    raise ModelLoadError(f"unknown format {settings.format!r}")


ST_NAMESPACE = "sentence_transformers."


def check_sentence_transformers_modules(path: Path) -> None:
    """Refuse a modules.json naming a module class outside sentence-transformers.

    sentence-transformers >= 6 already refuses these without ``trust_remote_code``; this
    keeps the rule whatever version is installed, and says why in Berth's words.
    """
    file = path / "modules.json"
    if not file.is_file():
        return  # TextEmbeddingModel reports the missing file
    try:
        modules = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{file}: not valid JSON: {exc}") from None
    if not isinstance(modules, list):
        raise ModelLoadError(f"{file}: must be a JSON list")
    for i, m in enumerate(modules):
        kind = m.get("type") if isinstance(m, dict) else None
        if not isinstance(kind, str) or not kind.startswith(ST_NAMESPACE):
            raise ModelLoadError(
                f"modules.json [{i}].type is {kind!r}: a model folder cannot choose code to run; "
                f"only {ST_NAMESPACE}* module classes are loaded"
            )
