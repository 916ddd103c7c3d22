"""The API server refuses bad hold settings (schema + CEL), naming the field: a
ScalingPolicy's scaleFromZero and a ModelDeployment's spec.autoscaling.holdDeadlineSeconds."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration


def policy(**wake: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.berth.dev/v1alpha1", "kind": "ScalingPolicy",
            "metadata": {"name": "hold-schema"}, "spec": {"scaleFromZero": wake}}  # fmt: skip


def md(seconds: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.berth.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "hold-schema", "namespace": "default"},
            "spec": {"model": {"uri": "file:///models/m.pt", "format": "torchscript"},
                     "autoscaling": {"maxReplicas": 2, "holdDeadlineSeconds": seconds}}}  # fmt: skip


BAD = [
    (policy(holdDeadlineSeconds=-1), "spec.scaleFromZero.holdDeadlineSeconds"),
    (policy(holdDeadlineSeconds=0), "spec.scaleFromZero.holdDeadlineSeconds"),
    (policy(holdDeadlineSeconds=3601), "spec.scaleFromZero.holdDeadlineSeconds"),
    (policy(holdDeadlineSeconds="soon"), "spec.scaleFromZero.holdDeadlineSeconds"),
    (policy(maxHeldRequests=0), "spec.scaleFromZero.maxHeldRequests"),
    (policy(maxHeldBytes="-1Mi"), "spec.scaleFromZero.maxHeldBytes"),
    (policy(maxHeldBytes="lots"), "spec.scaleFromZero.maxHeldBytes"),
    (policy(maxHeldBytes="2Ti"), "spec.scaleFromZero.maxHeldBytes"),
    (policy(deadline=5), "spec.scaleFromZero.deadline"),  # unknown field
    (md(-5), "spec.autoscaling.holdDeadlineSeconds"),
    (md(99999), "spec.autoscaling.holdDeadlineSeconds"),
]


@pytest.mark.parametrize(("manifest", "field"), BAD)
def test_bad_hold_setting_refused_with_its_field(
    cluster: Any, crds: None, manifest: Any, field: str
) -> None:
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-",
                           input=yaml.safe_dump(manifest), check=False)  # fmt: skip
    assert proc.returncode != 0, f"accepted: {manifest}"
    assert field in proc.stderr, proc.stderr


def test_good_hold_settings_accepted(cluster: Any, crds: None) -> None:
    for manifest in (policy(holdDeadlineSeconds=3600, maxHeldRequests=1, maxHeldBytes="16Mi"),
                     policy(maxHeldBytes=1048576), md(1)):  # fmt: skip
        cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(manifest))
