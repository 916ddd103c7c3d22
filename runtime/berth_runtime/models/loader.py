"""Dispatch on ``--format``: resolve the URI, read berth.json, load, return a ServedModel."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from berth_runtime import sources
from berth_runtime.datatypes import TORCH_DTYPES
from berth_runtime.errors import ModelLoadError
from berth_runtime.manifest import read_manifest
from berth_runtime.models.base import ServedModel
from berth_runtime.settings import Settings

log = logging.getLogger("berth.models")

UNSAFE_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def refuse_unsafe_environment(environ: dict[str, str] | os._Environ[str]) -> None:
    """Berth never unpickles; refuse to run where torch.load has been made to."""
    if environ.get(UNSAFE_ENV):
        raise ModelLoadError(
            f"{UNSAFE_ENV} is set; Berth never unpickles model files and refuses to start. "
            "Unset it."
        )


def safe_torch_load(path: Path) -> object:
    """The only way Berth calls torch.load: weights only, never arbitrary pickles."""
    refuse_unsafe_environment(os.environ)
    return torch.load(str(path), map_location="cpu", weights_only=True)


def load_model(settings: Settings, device: torch.device) -> ServedModel:
    """Fetch, unpack and load the model named by settings (does not warm it up)."""
    refuse_unsafe_environment(os.environ)
    cache = Path(settings.cache_dir)
    path = sources.resolve(settings.model_uri, cache, Path(settings.pvc_root))
    dtype = TORCH_DTYPES[settings.dtype]
    manifest = read_manifest(path)
    log.info("loading %s model %r from %s on %s", settings.format, settings.name, path, device)
    if settings.format == "sentence-transformers":
        from berth_runtime.models.text import TextEmbeddingModel

        return TextEmbeddingModel(settings.name, path, device, dtype)
    from berth_runtime.models import torch_models

    if settings.format == "torchscript":
        return torch_models.load_torchscript(settings.name, path, manifest, device, dtype)
    if settings.format == "torch-export":
        return torch_models.load_export(settings.name, path, manifest, device, dtype)
    if settings.format == "safetensors":
        return torch_models.load_safetensors(
            settings.name, path, manifest, device, dtype, settings.factory
        )
    raise ModelLoadError(f"unknown format {settings.format!r}")
