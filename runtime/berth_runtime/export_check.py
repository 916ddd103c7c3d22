"""Inspect a ``torch.export`` ``.pt2`` archive before torch opens it; refuse what runs code.

``torch.export.load`` unpickles entries its payload configs mark ``use_pickle`` (with
``weights_only=False``), ``pickle.loads`` opaque constants, loads TorchBind objects, falls
back to ``weights_only=False`` for sample inputs, reads legacy pickled weight files, and
loads AOTInductor shared libraries. This module reads the zip directory and the JSON
payload configs only (no torch, no unpickling) and refuses every such entry, so what
reaches torch is a graph (JSON), raw tensor bytes and a sample-input file that the
process-wide weights-only setting (:func:`berth_runtime.safety.force_weights_only`) loads.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from berth_runtime.errors import ModelLoadError

WEIGHTS_DIR = "data/weights/"
CONSTANTS_DIR = "data/constants/"
REFUSED_DIRS = {
    "data/aotinductor/": "AOTInductor native code",
    "data/executorch/": "an ExecuTorch program",
    "data/mtia/": "MTIA code",
    "xl_model_weights/": "externally mapped weights",
}
TENSOR_PREFIX = "tensor_"
WEIGHT_PREFIX = "weight_"
MAX_CONFIG_BYTES = 64 << 20


def _root(names: list[str]) -> str:
    """The archive's top folder ('model/' as torch writes it), from its archive_format entry."""
    for n in names:
        if n.endswith("archive_format") and n.count("/") == 1:
            return n[: -len("archive_format")]
    raise ModelLoadError(
        "not a PT2 archive (no archive_format entry); re-save with torch.export.save"
    )


def _config(zf: zipfile.ZipFile, name: str, file: str) -> dict[str, Any]:
    info = zf.getinfo(name)
    if info.file_size > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{file}: {name} is {info.file_size} bytes; refused")
    try:
        doc = json.loads(zf.read(name))
    except ValueError as exc:
        raise ModelLoadError(f"{file}: {name} is not valid JSON: {exc}") from None
    config = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{file}: {name} has no 'config' object")
    return config


def _check_payloads(config: dict[str, Any], where: str, prefix: str, file: str) -> None:
    for fqn, meta in config.items():
        if not isinstance(meta, dict):
            raise ModelLoadError(f"{file}: {where} entry {fqn!r} is not an object")
        path_name = meta.get("path_name")
        if meta.get("use_pickle") is not False:
            raise ModelLoadError(
                f"{file}: {where} entry {fqn!r} ({path_name}) is pickled; Berth never "
                "unpickles model files. Export plain tensors (no tensor subclasses or objects)"
            )
        if not isinstance(path_name, str) or not path_name.startswith(prefix):
            raise ModelLoadError(
                f"{file}: {where} entry {fqn!r} is {path_name!r}, an opaque or custom object; "
                f"only raw tensors ({prefix}*) are loaded"
            )


def check_pt2(path: Path) -> None:
    """Raise :class:`ModelLoadError` unless ``path`` is a PT2 archive of graph, raw tensors
    and sample inputs only."""
    file = path.name
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            root = _root(names)
            rel = [n[len(root) :] for n in names if n.startswith(root)]
            if (
                zf.read(root + "archive_format").strip() != b"pt2"
                or (root + "archive_version") not in names
            ):
                raise ModelLoadError(f"{file}: not a PT2 archive of the current format")
            models = [r for r in rel if r.startswith("models/") and r.endswith(".json")]
            if not models:
                raise ModelLoadError(f"{file}: holds no exported program (models/*.json)")
            for r in rel:
                for d, what in REFUSED_DIRS.items():
                    if r.startswith(d):
                        raise ModelLoadError(f"{file}: entry {r!r} is {what}; refused")
            for m in models:
                model = m[len("models/") : -len(".json")]
                for legacy in (f"{WEIGHTS_DIR}{model}.pt", f"{CONSTANTS_DIR}{model}.pt"):
                    if legacy in rel:
                        raise ModelLoadError(
                            f"{file}: {legacy} is a pickled legacy payload; refused. "
                            "Re-save with a current torch.export.save"
                        )
                w = f"{WEIGHTS_DIR}{model}_weights_config.json"
                c = f"{CONSTANTS_DIR}{model}_constants_config.json"
                for cfg, prefix in ((w, WEIGHT_PREFIX), (c, TENSOR_PREFIX)):
                    if cfg not in rel:
                        raise ModelLoadError(f"{file}: {cfg} is missing; refused")
                    _check_payloads(_config(zf, root + cfg, file), cfg, prefix, file)
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"{file} is not a torch.export archive (zip): {exc}") from None
    except (KeyError, OSError) as exc:
        raise ModelLoadError(f"{file}: cannot read the archive: {exc}") from None
