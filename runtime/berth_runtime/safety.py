"""Never unpickle: the environment guard and the only sanctioned ``torch.load``.

Torch-free at import so the CLI can refuse an unsafe environment before loading torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from berth_runtime.errors import ModelLoadError

UNSAFE_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def refuse_unsafe_environment(environ: Mapping[str, str]) -> None:
    """Berth never unpickles model files; refuse to run where torch.load was made to."""
    if environ.get(UNSAFE_ENV):
        raise ModelLoadError(
            f"{UNSAFE_ENV} is set; Berth never unpickles model files and refuses to start. "
            "Unset it."
        )


def safe_torch_load(path: Path) -> object:
    """The only way Berth calls torch.load: ``weights_only=True``, tensors and plain data."""
    import os

    import torch

    refuse_unsafe_environment(os.environ)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path.name}: refused by the weights-only loader: {exc}") from exc
