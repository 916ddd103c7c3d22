"""Never unpickle: the environment guard, weights-only forcing, the factory allowlist and
the only sanctioned ``torch.load``.

Torch-free at import so the CLI can refuse an unsafe environment before loading torch.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from pathlib import Path

from berth_runtime.errors import ModelLoadError

UNSAFE_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
FORCE_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
"""torch reads this on every ``torch.load`` and then uses ``weights_only=True`` even where
the caller (torch.export's own loader, a library) passed ``weights_only=False``."""


def refuse_unsafe_environment(environ: Mapping[str, str]) -> None:
    """Berth never unpickles model files; refuse to run where torch.load was made to."""
    if environ.get(UNSAFE_ENV):
        raise ModelLoadError(
            f"{UNSAFE_ENV} is set; Berth never unpickles model files and refuses to start. "
            "Unset it."
        )


def force_weights_only(environ: MutableMapping[str, str]) -> None:
    """Make every ``torch.load`` in this process weights-only, whoever calls it."""
    refuse_unsafe_environment(environ)
    environ[FORCE_ENV] = "1"


def factory_allowed(ref: str, allow: tuple[str, ...]) -> bool:
    """Whether ``module:function`` lies under one of the allowed dotted module prefixes.

    ``pkg`` allows ``pkg`` and ``pkg.sub`` but not ``pkg_evil``; an empty allowlist allows nothing.
    """
    module = ref.partition(":")[0]
    return any(module == p or module.startswith(p + ".") for p in allow if p)


def check_factory(ref: str, allow: tuple[str, ...]) -> None:
    """Refuse a factory outside the operator's allowlist, before anything is imported."""
    if factory_allowed(ref, allow):
        return
    shown = ", ".join(allow) if allow else "empty"
    raise ModelLoadError(
        f"factory {ref!r} is not allowed: its module is not under any prefix in "
        f"--factory-allow (BERTH_FACTORY_ALLOW), which is {shown}; the operator sets it"
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
