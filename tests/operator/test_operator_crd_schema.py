"""The CRD YAML itself: structure `kubectl explain` and `kubectl get` rely on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[2] / "crds"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CRDS / f"{name}.yaml").read_text())  # type: ignore[no-any-return]


def undescribed(schema: dict[str, Any], path: str) -> list[str]:
    """Every property below `schema` that lacks a description."""
    missing = []
    for name, sub in (schema.get("properties") or {}).items():
        where = f"{path}.{name}"
        if name != "metadata" and not sub.get("description"):
            missing.append(where)
        missing += undescribed(sub, where)
        if "items" in sub:
            missing += undescribed(sub["items"], where + "[]")
        if isinstance(sub.get("additionalProperties"), dict):
            missing += undescribed(sub["additionalProperties"], where + "{}")
    return missing


@pytest.mark.parametrize("name", ["modeldeployments.serving.berth.dev",
                                  "scalingpolicies.serving.berth.dev"])  # fmt: skip
def test_every_field_has_a_description(name: str) -> None:
    version = load(name)["spec"]["versions"][0]
    assert undescribed(version["schema"]["openAPIV3Schema"], "") == []


def test_one_file_per_crd_named_after_it() -> None:
    for path in CRDS.glob("*.yaml"):
        assert load(path.stem)["metadata"]["name"] == path.stem


def test_modeldeployment_names_columns_subresources() -> None:
    crd = load("modeldeployments.serving.berth.dev")["spec"]
    assert crd["scope"] == "Namespaced"
    assert crd["names"]["shortNames"] == ["md"] and crd["names"]["categories"] == ["berth"]
    (version,) = crd["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Model": ".spec.model.uri",
        "GPUs": ".spec.resources.gpu.count",
        "Ready": ".status.ready",
        "Targets": ".status.autoscaling.targets",
        "Canary": '.status.traffic[?(@.track=="canary")].percent',  # -o wide (priority 1)
        "Status": '.status.conditions[?(@.type=="Ready")].reason',
        "URL": ".status.url",
        "Cold start": ".status.startup.totalSeconds",
        "Age": ".metadata.creationTimestamp",
    }


def test_scalingpolicy_is_cluster_scoped() -> None:
    crd = load("scalingpolicies.serving.berth.dev")["spec"]
    assert crd["scope"] == "Cluster"
    spec = crd["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    # the original four fields stay (backward compatible); tolerance, fallback and
    # scaleFromZero (the gateway's hold) were added
    assert set(spec) == {"windows", "panicThreshold", "rates", "idleToZero", "tolerance",
                         "fallback", "scaleFromZero"}  # fmt: skip
    version = crd["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Models"] == ".status.models"
