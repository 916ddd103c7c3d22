"""The operator against the real control plane: scheduler, controller-manager, KWOK nodes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_helpers import apply, condition, events, get, model, wait_for

pytestmark = pytest.mark.integration

H100 = "NVIDIA-H100-80GB-HBM3"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
PODMONITOR_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podmonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PodMonitor, listKind: PodMonitorList, plural: podmonitors, singular: podmonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""

# The scrape endpoint: 2 s (the panic window is 6 s), the model name as a series label.
PODMETRICS = [{"port": "http", "path": "/metrics", "interval": "2s", "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_label_serving_berth_dev_model"], "targetLabel": "modeldeployment"}]}]  # fmt: skip


def md_get(cluster: Any, ns: str, name: str) -> Any:
    return get(cluster, "modeldeployments", name, ns)


def wait_ready(cluster: Any, ns: str, name: str, replicas: int, timeout: float = 60) -> Any:
    def ready() -> Any:
        md = md_get(cluster, ns, name)
        st = (md or {}).get("status") or {}
        ok = condition(md, "Ready").get("status") == "True"
        # a status that describes the current spec, not the one before an edit
        current = md is not None and st.get("observedGeneration") == md["metadata"]["generation"]
        return md if ok and current and st.get("readyReplicas") == replicas else None

    return wait_for(ready, timeout, what=f"{name} Ready with {replicas} ready replicas")


def pods(cluster: Any, ns: str, name: str) -> list[dict[str, Any]]:
    data = get(cluster, "pods", ns=ns) or {"items": []}
    return [p for p in data["items"]
            if p["metadata"].get("labels", {}).get("serving.berth.dev/model") == name]  # fmt: skip


def cpu_model(cluster: Any, ns: str, name: str, **spec: Any) -> Any:
    apply(cluster, model(name, **spec), ns)
    return wait_ready(cluster, ns, name, spec.get("replicas", 1))


def test_gpu_model_scheduled_and_ready(cluster: Any, namespace: str, operator: Any) -> None:
    # Pod Security "restricted" enforced: the pods must pass it to be created at all.
    cluster.kubectl("label", "namespace", namespace,
                    "pod-security.kubernetes.io/enforce=restricted")  # fmt: skip
    apply(cluster, model("vision", resources={"gpu": {"count": 1, "product": H100}}), namespace)

    dep = wait_for(lambda: get(cluster, "deployment", "vision", namespace), what="Deployment")
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": H100}
    assert pod["tolerations"] == [GPU_TOLERATION]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == (
        "ModelDeployment",
        "vision",
        True,
    )
    svc = wait_for(lambda: get(cluster, "service", "vision", namespace), what="Service")
    assert svc["metadata"]["ownerReferences"][0]["uid"] == owner["uid"]

    md = wait_ready(cluster, namespace, "vision", 1)
    (p,) = [
        p for p in pods(cluster, namespace, "vision") if not p["metadata"].get("deletionTimestamp")
    ]
    assert p["spec"]["nodeName"].startswith("kwok-h100-")
    st = md["status"]
    assert st["replicas"] == st["desiredReplicas"] == st["readyReplicas"] == 1
    assert st["url"] == f"http://vision.{namespace}.svc.cluster.local"
    assert st["observedGeneration"] == md["metadata"]["generation"]
    assert condition(md, "Degraded")["status"] == "False"
    # Printer columns: Ready shows ready/desired, Status the Ready reason.
    row = cluster.kubectl("get", "md", "vision", "-n", namespace, "--no-headers").stdout.split()
    assert row[1:5] == ["file:///models/m.pt", "1", "1/1", "Serving"]
    reasons = {e["reason"] for e in events(cluster, namespace, "vision")}
    assert {"Created", "Serving"} <= reasons


def test_kubectl_scale(cluster: Any, namespace: str, operator: Any) -> None:
    cpu_model(cluster, namespace, "scaled")
    cluster.kubectl("scale", "md/scaled", "--replicas=3", "-n", namespace)
    wait_for(lambda: (get(cluster, "deployment", "scaled", namespace) or {})["spec"]["replicas"] == 3,
             what="Deployment at 3 replicas")  # fmt: skip
    md = wait_ready(cluster, namespace, "scaled", 3)
    assert md["status"]["replicas"] == 3 and md["status"]["desiredReplicas"] == 3
    assert get(cluster, "pdb", "scaled", namespace)["spec"]["maxUnavailable"] == 1
    # The scale subresource reads the status back.
    scale = cluster.kubectl("get", "--raw",
                            f"/apis/serving.berth.dev/v1alpha1/namespaces/{namespace}"
                            "/modeldeployments/scaled/scale").stdout  # fmt: skip
    assert yaml.safe_load(scale)["status"]["replicas"] == 3
    # Back to one: the PodDisruptionBudget goes away.
    cluster.kubectl("scale", "md/scaled", "--replicas=1", "-n", namespace)
    wait_for(lambda: get(cluster, "pdb", "scaled", namespace) is None, what="PDB deleted")
    wait_ready(cluster, namespace, "scaled", 1)


def test_sixteen_gpus_is_insufficient(cluster: Any, namespace: str, operator: Any) -> None:
    apply(cluster, model("huge", resources={"gpu": {"count": 16, "product": H100}}), namespace)

    def degraded_like_scheduler() -> Any:
        md = md_get(cluster, namespace, "huge")
        cond = condition(md, "Degraded")
        scheduled = [c for p in pods(cluster, namespace, "huge")
                     for c in p["status"].get("conditions", []) if c["type"] == "PodScheduled"]  # fmt: skip
        if cond.get("reason") != "InsufficientGPU" or not scheduled:
            return None
        return cond if cond["message"] == scheduled[0]["message"] else None

    cond = wait_for(degraded_like_scheduler, 60, what="Degraded/InsufficientGPU")
    assert cond["status"] == "True"
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    md = md_get(cluster, namespace, "huge")
    assert condition(md, "Ready")["reason"] == "InsufficientGPU"
    warnings = [e for e in events(cluster, namespace, "huge") if e["reason"] == "InsufficientGPU"]
    assert warnings and warnings[0]["type"] == "Warning"


def test_drift_is_restored(cluster: Any, namespace: str, operator: Any) -> None:
    cpu_model(cluster, namespace, "drifty")
    before = get(cluster, "deployment", "drifty", namespace)
    cluster.kubectl("patch", "deployment", "drifty", "-n", namespace, "--type=merge",
                    "-p", '{"spec":{"replicas":4}}')  # fmt: skip
    cluster.kubectl("set", "env", "deployment/drifty", "-n", namespace, "BERTH_DTYPE=float16")

    def restored() -> bool:
        dep = get(cluster, "deployment", "drifty", namespace)
        env = {
            e["name"]: e.get("value")
            for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        return bool(dep["spec"]["replicas"] == 1 and env["BERTH_DTYPE"] == "float32")

    wait_for(restored, 30, what="Deployment restored")
    svc_uid = get(cluster, "service", "drifty", namespace)["metadata"]["uid"]
    cluster.kubectl("delete", "service", "drifty", "-n", namespace)
    wait_for(lambda: (get(cluster, "service", "drifty", namespace) or {}).get("metadata", {})
             .get("uid") not in (None, svc_uid), 30, what="Service recreated")  # fmt: skip
    assert (
        get(cluster, "deployment", "drifty", namespace)["metadata"]["uid"]
        == before["metadata"]["uid"]
    )
    assert "Restored" in {e["reason"] for e in events(cluster, namespace, "drifty")}
    wait_ready(cluster, namespace, "drifty", 1)


def _footprint(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    """What a churning operator would change: spec generations, its own managed fields
    (time of its last write), ReplicaSets and pods. (resourceVersions also move with
    status updates by the controllers, so they are not compared.)"""
    out: dict[str, Any] = {}
    for kind in ("deployment", "service", "pdb"):
        obj = get_managed(cluster, kind, name, ns)
        mine = [(m.get("operation"), m.get("time")) for m in obj["metadata"]["managedFields"]
                if m.get("manager") == "berth-operator"]  # fmt: skip
        out[kind] = (obj["metadata"].get("generation"), mine)
    out["replicasets"] = sorted(r["metadata"]["name"] for r in get(cluster, "rs", ns=ns)["items"])
    out["pods"] = sorted(p["metadata"]["uid"] for p in pods(cluster, ns, name))
    return out


def get_managed(cluster: Any, kind: str, name: str, ns: str) -> Any:
    out = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", "--show-managed-fields")
    return yaml.safe_load(out.stdout)


def test_restart_causes_no_churn(cluster: Any, namespace: str, operator: Any) -> None:
    cpu_model(cluster, namespace, "steady", replicas=2)
    before = _footprint(cluster, namespace, "steady")
    assert len(before["replicasets"]) == 1 and len(before["pods"]) == 2
    operator.restart()
    # The restarted operator has resumed this object once it logs it; then a quiet period.
    wait_for(lambda: f"{namespace}/steady resumed: no change" in operator.log(), 30,
             what="resume logged with no change")  # fmt: skip
    time.sleep(2)
    assert _footprint(cluster, namespace, "steady") == before
    deployments = get(cluster, "deployments", ns=namespace)["items"]
    assert [d["metadata"]["name"] for d in deployments] == ["steady"]
    wait_ready(cluster, namespace, "steady", 2)


def test_model_change_rolls_deployment(cluster: Any, namespace: str, operator: Any) -> None:
    cpu_model(cluster, namespace, "rolling")
    gen = get(cluster, "deployment", "rolling", namespace)["metadata"]["generation"]
    cluster.kubectl("patch", "md", "rolling", "-n", namespace, "--type=merge",
                    "-p", '{"spec":{"model":{"uri":"file:///models/v2.pt"}}}')  # fmt: skip

    def rolled() -> Any:
        dep = get(cluster, "deployment", "rolling", namespace)
        env = {
            e["name"]: e.get("value")
            for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        return dep if env["BERTH_MODEL_URI"] == "file:///models/v2.pt" else None

    dep = wait_for(rolled, 30, what="new model in the pod template")
    assert dep["metadata"]["generation"] > gen
    wait_for(lambda: len(get(cluster, "replicasets", ns=namespace)["items"]) == 2, 30,
             what="a second ReplicaSet")  # fmt: skip
    md = wait_ready(cluster, namespace, "rolling", 1)
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"]


def test_unrenderable_spec_is_permanent(cluster: Any, namespace: str, operator: Any) -> None:
    apply(cluster, model("clash", resources={"gpu": {"count": 1, "product": H100}},
                         scheduling={"nodeSelector": {"nvidia.com/gpu.product": "OTHER"}}),
          namespace)  # fmt: skip
    md = wait_for(lambda: (lambda m: m if condition(m, "Degraded").get("reason") == "InvalidSpec"
                           else None)(md_get(cluster, namespace, "clash")), 30,
                  what="Degraded/InvalidSpec")  # fmt: skip
    assert "spec.scheduling.nodeSelector" in condition(md, "Degraded")["message"]
    assert condition(md, "Ready")["status"] == "False"
    assert "InvalidSpec" in {e["reason"] for e in events(cluster, namespace, "clash")}
    for kind in ("deployments", "services", "pdb"):
        assert get(cluster, kind, ns=namespace)["items"] == []


def test_delete_garbage_collects_children(cluster: Any, namespace: str, operator: Any) -> None:
    cpu_model(cluster, namespace, "gone", replicas=2)
    cluster.kubectl("delete", "md", "gone", "-n", namespace, "--wait=true")

    def collected() -> bool:
        return all(
            get(cluster, k, "gone", namespace) is None for k in ("deployment", "service", "pdb")
        )

    wait_for(collected, 60, what="children garbage-collected")
    wait_for(lambda: pods(cluster, namespace, "gone") == [], 60, what="pods gone")


def test_podmonitor_when_prometheus_operator_installed(
    cluster: Any, namespace: str, operator: Any
) -> None:
    cpu_model(cluster, namespace, "watched")
    assert get(cluster, "crd", "podmonitors.monitoring.coreos.com") is None
    cluster.kubectl("apply", "-f", "-", input=PODMONITOR_CRD)
    try:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                        "crd/podmonitors.monitoring.coreos.com")  # fmt: skip
        pm = wait_for(lambda: get(cluster, "podmonitors", "watched", namespace), 60,
                      what="PodMonitor")  # fmt: skip
        assert pm["spec"]["podMetricsEndpoints"] == PODMETRICS
        assert pm["metadata"]["ownerReferences"][0]["name"] == "watched"
        # A new model gets one too, right away.
        cpu_model(cluster, namespace, "watched2")
        wait_for(
            lambda: get(cluster, "podmonitors", "watched2", namespace), 30, what="PodMonitor 2"
        )
    finally:
        cluster.kubectl("delete", "crd", "podmonitors.monitoring.coreos.com", check=False)


def test_examples_are_accepted(cluster: Any, namespace: str, crds: None) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    proc = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(examples))
    assert "created (server dry run)" in proc.stdout


def test_unowned_service_of_the_same_name_is_never_taken_over(
    cluster: Any, namespace: str, operator: Any
) -> None:
    # A tenant's own Service (no owner) named like a new model: server-side apply with
    # force would take it over and the owner reference would let GC delete it later.
    svc = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "taken", "labels": {"team": "theirs"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"name": "web", "port": 8081}]},
    }  # fmt: skip
    apply(cluster, svc, namespace)
    before = get(cluster, "service", "taken", namespace)
    apply(cluster, model("taken"), namespace)
    md = wait_for(lambda: (lambda m: m if condition(m, "Degraded").get("reason") == "InvalidSpec"
                           else None)(md_get(cluster, namespace, "taken")), 30,
                  what="Degraded/InvalidSpec for the unowned Service")  # fmt: skip
    message = condition(md, "Degraded")["message"]
    assert "Service named 'taken' already exists" in message, message
    assert condition(md, "Ready")["status"] == "False"
    # reported, and not again and again: the error and the Degraded transition, then quiet
    seen = [e["reason"] for e in events(cluster, namespace, "taken")]
    assert "InvalidSpec" in seen, seen
    time.sleep(17)  # past one re-check (reconcile.foreign_retry_seconds, 15 s)
    assert len(events(cluster, namespace, "taken")) == len(seen), events(
        cluster, namespace, "taken"
    )
    # the Service is untouched: same resourceVersion, no owner, its own selector and port
    after = get(cluster, "service", "taken", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert not after["metadata"].get("ownerReferences")
    assert after["spec"]["selector"] == {"app": "theirs"}
    # nothing else was written for the model either
    assert get(cluster, "deployment", "taken", namespace) is None
    # once the Service is gone, the model converges by itself (the name is checked again)
    cluster.kubectl("delete", "service", "taken", "-n", namespace)
    wait_for(lambda: get(cluster, "deployment", "taken", namespace), 40, what="the Deployment")
    wait_for(lambda: (get(cluster, "service", "taken", namespace) or {}).get("metadata", {})
             .get("ownerReferences"), 10, what="Berth's own Service")  # fmt: skip
