"""The API server refuses credentials in spec.model.uri and bad inline tensor specs, and
accepts good ones (real kube-apiserver, dry-run=server)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

PIN = "b" * 64
GOOD: dict[str, Any] = {
    "apiVersion": "serving.berth.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "specs"},
    "spec": {"model": {"uri": "file:///models/m.pt", "format": "torchscript"}},
}
CNN_IN = [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]


def model(**fields: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    doc["spec"]["model"].update(fields)
    return doc


# (manifest, text the error must contain) -- why
BAD = [
    # A password in the URI would show in the manifest, kubectl output and events.
    (model(uri=f"https://user:pw@host/m.pt#sha256={PIN}"), "must not carry credentials"),
    # A user name alone is user-info too (a token is often passed this way).
    (model(uri=f"https://token@host/m.pt#sha256={PIN}"), "must not carry credentials"),
    # s3/gs URIs cannot smuggle credentials either.
    (model(uri="s3://AKIA:secret@bucket/m.pt"), "must not carry credentials"),
    # The message points at the Secret-based way.
    (model(uri=f"https://u:p@host/m.pt#sha256={PIN}"), "Secret"),
    # Shapes need -1 or positive dimensions.
    (model(inputs=[{"name": "x", "shape": [-1, 0]}]), "spec.model.inputs[0].shape"),
    # An unknown datatype cannot be served.
    (model(inputs=[{"name": "x", "datatype": "FP8", "shape": [-1]}]),
     "spec.model.inputs[0].datatype"),
    # An input without a shape: the runtime needs one to warm up.
    (model(inputs=[{"name": "x"}]), "spec.model.inputs[0].shape"),
    # Two inputs with one name: requests could not tell them apart.
    (model(inputs=[{"name": "x", "shape": [-1]}, {"name": "x", "shape": [-1]}]),
     "spec.model.inputs[1]"),
    # Output entries are names only.
    (model(outputs=[{"name": "y", "shape": [-1]}]), "spec.model.outputs[0].shape"),
]  # fmt: skip


@pytest.fixture(scope="module")
def ns(cluster: Any, crds: None) -> Iterator[str]:
    name = f"t-crd-specs-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _apply(cluster: Any, ns: str, doc: dict[str, Any]) -> Any:
    return cluster.kubectl("apply", "--dry-run=server", "-o", "json", "-n", ns, "-f", "-",
                           input=yaml.safe_dump(doc), check=False)  # fmt: skip


@pytest.mark.parametrize(("manifest", "text"), BAD, ids=[f"{i:02d}" for i in range(len(BAD))])
def test_bad_model_refused(cluster: Any, ns: str, manifest: Any, text: str) -> None:
    proc = _apply(cluster, ns, manifest)
    assert proc.returncode != 0, f"accepted: {manifest}"
    assert text in proc.stderr, proc.stderr
    if "credentials" in text:
        assert "spec.model.uri" in proc.stderr


@pytest.mark.parametrize(
    "manifest",
    [
        model(uri=f"https://host/m.pt#sha256={PIN}"),
        model(uri=f"https://host/a@b/m.pt#sha256={PIN}"),  # '@' in the path is not user-info
        model(inputs=CNN_IN, outputs=[{"name": "logits"}]),
        model(inputs=[{"name": "ids", "datatype": "INT64", "shape": [-1, 128]}]),
    ],
    ids=["plain-https", "at-in-path", "inline-specs", "int64-input"],
)
def test_good_model_accepted(cluster: Any, ns: str, manifest: Any) -> None:
    proc = _apply(cluster, ns, manifest)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["spec"]["model"] == manifest["spec"]["model"]
