"""`berth operator apply-crds`: server-side apply Berth's CRDs (the chart's pre-upgrade hook).

The CRDs ship inside the package (berth_operator/crds/, copied from the repository's
crds/ when the wheel is built); a source checkout reads crds/ directly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

FIELD_MANAGER = "berth-crds"


def crd_dir() -> Path:
    packaged = Path(__file__).resolve().parent / "crds"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "crds"  # a source checkout (editable install)


def load() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(crd_dir().glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            raise ValueError(f"{path}: not a CustomResourceDefinition")
        docs.append(doc)
    if not docs:
        raise ValueError(f"no CRDs in {crd_dir()}")
    return docs


def main(argv: list[str]) -> int:
    from lightkube import ApiError, Client
    from lightkube.generic_resource import create_global_resource
    from lightkube.types import PatchType

    crd_cls = create_global_resource(
        "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions"
    )
    client = Client(field_manager=FIELD_MANAGER)
    for doc in load():
        name = doc["metadata"]["name"]
        try:
            client.patch(
                crd_cls, name, doc, patch_type=PatchType.APPLY, field_manager=FIELD_MANAGER,
                force=True,
            )  # fmt: skip
        except ApiError as err:
            print(f"berth operator apply-crds: {name}: {err.status.message}", file=sys.stderr)
            return 1
        print(f"applied {name}")
    return 0
