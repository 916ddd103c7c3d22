"""The examples `make up` deploys: weights into the local PVC, manifests, wait for Ready."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .state import REPO

if TYPE_CHECKING:
    from .cluster import DevCluster

LOCAL_EXAMPLES = REPO / "examples" / "local"
NAMESPACE = "default"
MODELS = ("minilm", "small-cnn", "tiny-chat")  # ModelDeployments in examples/local
READY_TIMEOUT = 600.0  # seconds; a cold start imports PyTorch in every runtime process
VOLUME_FILE = "00-models-volume.yaml"


def pvc_dir(pvc_root: Path, namespace: str, claim: str) -> Path:
    """The host directory behind the local PersistentVolume of `claim`."""
    return pvc_root / namespace / claim


def volume_manifests(models_dir: Path) -> str:
    """examples/local/00-models-volume.yaml with the PersistentVolume's hostPath set to
    this cluster's directory (the real node mounts it into the model pods)."""
    docs = list(yaml.safe_load_all((LOCAL_EXAMPLES / VOLUME_FILE).read_text()))
    for doc in docs:
        if doc.get("kind") == "PersistentVolume":
            doc["spec"]["hostPath"] = {"path": str(models_dir), "type": "Directory"}
    return yaml.safe_dump_all(docs, sort_keys=False)


def claim_manifests(
    namespace: str, models_dir: Path, pv_name: str, labels: dict[str, str] | None = None
) -> str:
    """A `models` claim in `namespace` bound to a hostPath PersistentVolume on `models_dir`
    (what tests and benchmarks give their own models; `pvc://models/<path>` reads it)."""
    pv = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, **({"labels": labels} if labels else {})},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
            "storageClassName": "berth-dev-local",
            "hostPath": {"path": str(models_dir), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": "models"},
        },
    }  # fmt: skip
    claim = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "models", "namespace": namespace},
        "spec": {
            "accessModes": ["ReadOnlyMany"], "storageClassName": "berth-dev-local",
            "volumeName": pv_name, "resources": {"requests": {"storage": "1Gi"}},
        },
    }  # fmt: skip
    return yaml.safe_dump_all([pv, claim], sort_keys=False)


def deploy_examples(dev: DevCluster) -> None:
    from .state import DevClusterError

    models_dir = pvc_dir(dev.paths.root / "pvc", NAMESPACE, "models")
    dev._step(
        f"example weights into {models_dir} (MiniLM copied, small CNN scripted, tiny chat model built)"
    )
    log = dev.paths.log("example-weights")
    with log.open("ab") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "berth_dev.weights", str(models_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode != 0:
        raise DevClusterError(f"example weights: failed ({proc.returncode}); read {log}")
    dev._step(f"applying {LOCAL_EXAMPLES.relative_to(REPO)}/")
    dev.kubectl("apply", "-f", "-", input=volume_manifests(models_dir))
    for f in sorted(LOCAL_EXAMPLES.glob("*.yaml")):
        if f.name != VOLUME_FILE:
            dev.kubectl("apply", "-f", str(f))
    wait_ready(dev, NAMESPACE, MODELS)


def _pods(client: Any, ns: str, name: str) -> list[Any]:
    from lightkube.resources.core_v1 import Pod

    return list(client.list(Pod, namespace=ns, labels={"app.kubernetes.io/instance": name}))


def _ready(pod: Any) -> bool:
    conds = (pod.status.conditions or []) if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conds)


def _describe(pod: Any) -> str:
    st = pod.status
    if st is None:
        return "no status"
    if not pod.spec.nodeName:
        why = [c.message for c in st.conditions or [] if c.type == "PodScheduled" and c.message]
        return f"unscheduled ({why[0] if why else 'waiting for the scheduler'})"
    for cs in st.containerStatuses or []:
        if cs.state and cs.state.waiting:
            return f"{cs.state.waiting.reason}: {cs.state.waiting.message or ''}".strip(": ")
        if cs.state and cs.state.running:
            extra = f", {cs.restartCount} restarts" if cs.restartCount else ""
            return f"running on {pod.spec.nodeName} at {st.podIP}, loading the model{extra}"
    return str(st.phase)


def wait_ready(dev: DevCluster, ns: str, names: tuple[str, ...]) -> None:
    from .state import DevClusterError

    client = dev.client()
    start = time.monotonic()
    last_report = 0.0
    pending = set(names)
    while pending:
        elapsed = time.monotonic() - start
        states = {}
        for name in sorted(pending):
            pods = _pods(client, ns, name)
            if pods and all(_ready(p) for p in pods):
                dev._step(f"{ns}/{name} Ready after {elapsed:.0f}s ({pods[0].status.podIP})")
                pending.discard(name)
            else:
                states[name] = _describe(pods[0]) if pods else "no pod yet (operator)"
        if not pending:
            return
        if elapsed > READY_TIMEOUT:
            detail = "; ".join(f"{n}: {s}" for n, s in states.items())
            raise DevClusterError(
                f"examples: not Ready after {READY_TIMEOUT:.0f}s ({detail}); read "
                f"`kubectl logs -n {ns} <pod>`, {dev.paths.log('kubelet')} and "
                f"{dev.paths.log('berth-operator')}"
            )
        if elapsed - last_report >= 5:
            last_report = elapsed
            for name, s in states.items():
                dev._step(f"waiting for {ns}/{name} ({elapsed:.0f}s): {s}")
        time.sleep(0.5)


def examples_text(dev: DevCluster) -> list[str]:
    """How to look at and call the examples (empty when they are not deployed)."""
    state = dev.state
    prom = state.get("urls", {}).get("prometheus")
    lines: list[str] = []
    try:
        client = dev.client()
        ips = {
            n: next((p.status.podIP for p in _pods(client, NAMESPACE, n) if _ready(p)), None)
            for n in MODELS
        }
    except Exception:
        return lines
    kubectl = f"{dev.bin_dir}/kubectl --kubeconfig {dev.paths.kubeconfig}"
    if any(ips.values()):
        lines += [
            "",
            "Example models (examples/local/):",
            f"  {kubectl} get modeldeployments,pods -o wide",
            f"  {kubectl} describe md minilm",
        ]
    gateway = state.get("urls", {}).get("berth-gateway")
    if gateway and any(ips.values()):
        lines += [f"  # through the gateway ({gateway}: every model by name, scale from zero):"]
    if ips.get("minilm"):
        where = gateway or f"http://{ips['minilm']}:8080"
        lines += [
            "  # OpenAI embeddings from MiniLM:",
            f"  curl -s {where}/v1/embeddings -H 'content-type: application/json' \\",
            '    -d \'{"model": "minilm", "input": ["hello world"]}\' | head -c 300; echo',
        ]
    if ips.get("small-cnn"):
        where = gateway or f"http://{ips['small-cnn']}:8080"
        lines += [
            "  # Open Inference Protocol v2, the CNN's metadata:",
            f"  curl -s {where}/v2/models/small-cnn",
        ]
    if ips.get("tiny-chat"):
        where = gateway or f"http://{ips['tiny-chat']}:8080"
        lines += [
            "  # OpenAI chat, streamed, from the tiny chat model:",
            f"  curl -sN {where}/v1/chat/completions -H 'content-type: application/json' \\",
            '    -d \'{"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}],'
            ' "max_tokens": 16, "stream": true}\'',
        ]
    if gateway:
        lines += [
            f"Gateway: {gateway}  (GET {gateway}/v1/models lists every model; another "
            f"namespace: {gateway}/ns/<namespace>/...)",
        ]
    if prom:
        lines += [
            f"Prometheus: {prom}",
            f"  curl -s '{prom}/api/v1/query?query=berth_requests_total'",
        ]
    return lines
