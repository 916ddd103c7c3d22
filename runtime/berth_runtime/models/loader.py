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
from berth_runtime.safety import refuse_unsafe_environment
from berth_runtime.settings import Settings

log = logging.getLogger("berth.models")


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
