"""The API server itself refuses bad ModelDeployments (schema + CEL), naming the field."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_helpers import get

pytestmark = pytest.mark.integration

CRDS = Path(__file__).resolve().parents[2] / "crds"
PIN = "a" * 64
GOOD: dict[str, Any] = {
    "apiVersion": "serving.berth.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "bad"},
    "spec": {"model": {"uri": "file:///models/m.pt", "format": "torchscript"}},
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one field set (value None: removed); path is dotted."""
    doc = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return doc


AS = {"maxReplicas": 3}
# (manifest, text the error must contain -- the field) -- why
BAD = [
    (with_("spec.replicas", "three"), "spec.replicas"),  # wrong type
    (with_("spec.replicas", -1), "spec.replicas"),  # negative replicas
    (with_("spec.foo", 1), "spec.foo"),  # unknown field (kubectl: strict validation)
    (with_("spec.model.weights", "x"), "spec.model.weights"),  # unknown nested field
    (with_("spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
     "spec.autoscaling.minReplicas"),  # min > max
    (with_("spec.autoscaling", {"maxReplicas": 0}), "spec.autoscaling.maxReplicas"),  # max < 1
    (with_("spec.autoscaling", {"minReplicas": 1}), "spec.autoscaling.maxReplicas"),  # missing
    (with_("spec.autoscaling", {**AS, "metric": {"type": "vibes", "target": 1}}),
     "spec.autoscaling.metric.type"),  # metric enum
    (with_("spec.autoscaling", {**AS, "metric": {"type": "promql", "target": 1}}),
     "spec.autoscaling.metric.query"),  # promql needs a query
    (with_("spec.autoscaling", {**AS, "metric": {"type": "rps", "target": 0}}),
     "spec.autoscaling.metric.target"),  # target must be > 0
    (with_("spec.model.uri", "pvc://models/../etc/passwd"), "spec.model.uri"),  # traversal
    (with_("spec.model.uri", "pvc://models/%2e%2e/secret"), "spec.model.uri"),  # encoded
    (with_("spec.model.uri", "s3://bucket/a/.%2E/b"), "spec.model.uri"),  # mixed encoding
    (with_("spec.model.uri", "file:///models/..%2fetc"), "spec.model.uri"),  # encoded slash
    (with_("spec.model.uri", "file:///models/.."), "spec.model.uri"),  # trailing segment
    (with_("spec.model.uri", "file:///models\\..\\etc"), "spec.model.uri"),  # backslashes
    (with_("spec.model.uri", "ftp://host/m.pt"), "spec.model.uri"),  # bad scheme
    (with_("spec.model.uri", "http://host/m.pt#sha256=" + PIN), "spec.model.uri"),  # no TLS
    (with_("spec.model.uri", "models/resnet.pt"), "spec.model.uri"),  # no scheme
    (with_("spec.model.uri", "https://host/m.pt"), "spec.model.uri"),  # missing pin
    (with_("spec.model.uri", "https://host/m.pt#sha256=abc"), "spec.model.uri"),  # short pin
    (with_("spec.model.uri", "https://host/m.pt#sha256=" + "A" * 64), "spec.model.uri"),  # case
    (with_("spec.model.uri", "pvc://Bad_Claim/m.pt"), "spec.model.uri"),  # invalid claim
    (with_("spec.model.uri", None), "spec.model.uri"),  # required
    (with_("spec.model", None), "spec.model"),  # required
    (with_("spec.model.format", "onnx"), "spec.model.format"),  # format enum
    (with_("spec.model.format", "safetensors"), "spec.model.factory"),  # factory needed
    (with_("spec.resources.gpu", {"count": -1}), "spec.resources.gpu.count"),  # negative GPUs
    (with_("spec.resources.gpu", {"count": 65}), "spec.resources.gpu.count"),  # too many
    (with_("spec.resources.gpu", {"count": "one"}), "spec.resources.gpu.count"),  # type
    (with_("spec.resources.gpu", {"count": 0, "product": "NVIDIA-H100-80GB-HBM3"}),
     "spec.resources.gpu.product"),  # product without GPUs
    (with_("spec.resources.cpu", "lots"), "spec.resources.cpu"),  # not a quantity
    (with_("spec.resources.memory", "-1Gi"), "spec.resources.memory"),  # negative memory
    (with_("spec.runtime.dtype", "int8"), "spec.runtime.dtype"),  # dtype enum
    (with_("spec.runtime.batching", {"maxBatchSize": 0}),
     "spec.runtime.batching.maxBatchSize"),  # batch >= 1
    (with_("spec.scheduling.tolerations", [{"key": "k", "operator": "Maybe"}]),
     "spec.scheduling.tolerations[0].operator"),  # toleration enum
    (with_("spec.scheduling.nodeSelector", {"zone": 1}),
     "spec.scheduling.nodeSelector.zone"),  # selector values are strings
    (with_("metadata.name", "1-starts-with-digit"), "metadata.name"),  # names the Service
    (with_("spec.auth", {"secretRef": {}}), "spec.auth.secretRef.name"),  # which Secret
    (with_("spec.auth", {"secretRef": {"name": "Not_A_Name"}}),
     "spec.auth.secretRef.name"),  # not an object name
    (with_("spec.network", {"allowFrom": [{"namespace": "Bad_NS"}]}),
     "spec.network.allowFrom[0].namespace"),  # not a namespace name
    (with_("spec.network", {"allowFrom": [{}]}),
     "spec.network.allowFrom[0].namespace"),  # required
]  # fmt: skip
# spec fields whose refusals live in another module (say which, so a new field must say too)
ELSEWHERE = {"canary": "test_canary_cluster.py (the canary's schema refusals)"}


@pytest.fixture(scope="module")
def corpus_ns(cluster: Any, crds: None) -> Iterator[str]:
    name = f"t-crd-corpus-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_every_spec_field_has_a_refusal_row() -> None:
    """A field added to the CRD without a bad value tried here (or in the module ELSEWHERE
    names) fails this: the corpus grows with the API."""
    crd = yaml.safe_load((CRDS / "modeldeployments.serving.berth.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    tried = {field.split(".")[1].split("[")[0] for _, field in BAD if field.startswith("spec.")}
    missing = set(spec["properties"]) - tried - set(ELSEWHERE)
    assert not missing, f"spec fields with no bad-value row: {sorted(missing)}"


@pytest.mark.parametrize(("manifest", "field"), BAD, ids=[f"{i:02d}-{f}" for i, (_, f) in
                                                          enumerate(BAD)])  # fmt: skip
def test_bad_manifest_rejected(cluster: Any, corpus_ns: str, manifest: Any, field: str) -> None:
    proc = cluster.kubectl("apply", "-n", corpus_ns, "-f", "-", input=yaml.safe_dump(manifest),
                           check=False)  # fmt: skip
    assert proc.returncode != 0, f"accepted: {manifest}"
    assert field in proc.stderr, proc.stderr


def test_good_manifest_accepted_and_nothing_else_created(cluster: Any, corpus_ns: str) -> None:
    # The whole corpus in one apply (whatever ran before, in any order): every document is
    # refused, nothing of it is stored, and no child of a bad one appears; the good one passes.
    docs = [{**m, "metadata": {**m["metadata"], "name": m["metadata"]["name"] + f"-{i}"}}
            if m["metadata"]["name"] == "bad" else m for i, (m, _) in enumerate(BAD)]  # fmt: skip
    proc = cluster.kubectl("apply", "-n", corpus_ns, "-f", "-",
                           input=yaml.safe_dump_all(docs), check=False)  # fmt: skip
    assert proc.returncode != 0 and "created" not in proc.stdout, proc.stdout
    cluster.kubectl("apply", "--dry-run=server", "-n", corpus_ns, "-f", "-",
                    input=yaml.safe_dump(GOOD))  # fmt: skip
    assert get(cluster, "modeldeployments", ns=corpus_ns)["items"] == []
    assert get(cluster, "deployments", ns=corpus_ns)["items"] == []
    assert get(cluster, "services", ns=corpus_ns)["items"] == []


def test_defaults_are_filled(cluster: Any, corpus_ns: str) -> None:
    proc = cluster.kubectl("apply", "--dry-run=server", "-o", "json", "-n", corpus_ns, "-f", "-",
                           input=yaml.safe_dump(with_("spec.autoscaling", AS)))  # fmt: skip
    spec = yaml.safe_load(proc.stdout)["spec"]
    assert spec["replicas"] == 1
    assert spec["runtime"] == {"imagePullPolicy": "IfNotPresent", "dtype": "float32",
                               "batching": {"maxBatchSize": 32, "maxDelayMs": 5}}  # fmt: skip
    assert spec["resources"] == {"gpu": {"count": 0}, "cpu": "1", "memory": "2Gi"}
    assert spec["autoscaling"] == {"minReplicas": 0, "maxReplicas": 3,
                                   "metric": {"type": "concurrency", "target": 4},
                                   "policyRef": {"name": "default"}}  # fmt: skip
