"""What `berth dev up` starts after the control plane: the real node, Prometheus, CRDs +
operator, and the local examples. Each step is idempotent (a running component is
kept), shows its progress, and fails naming itself and the log to read.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import prometheus
from .config import Addons
from .state import REPO

if TYPE_CHECKING:
    from .cluster import DevCluster

__all__ = [
    "Addons",
    "check_operator_importable",
    "start",
    "start_node",
    "start_prometheus",
]

CRDS_DIR = REPO / "crds"
BERTH = str(Path(sys.executable).parent / "berth")  # the console script of this venv
NODE_NAME = "local-node-0"  # the real node (node.py)


def _component_running(dev: DevCluster, name: str) -> bool:
    from .state import running_components

    return name in running_components(dev.paths)


def _set_url(dev: DevCluster, name: str, url: str) -> dict[str, Any]:
    from .state import read_state, write_state

    state = read_state(dev.paths)
    state.setdefault("urls", {})[name] = url
    write_state(dev.paths, state)
    return state


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def start_prometheus(dev: DevCluster) -> None:
    from .state import DevClusterError, free_port, http_ok, read_state

    if _component_running(dev, "prometheus"):
        return
    dev._step("Prometheus (hack/install-prometheus.sh builds it on first use: a few minutes)")
    try:
        binary = prometheus.find_binary()
    except FileNotFoundError as err:
        raise DevClusterError(f"prometheus: {err}") from None
    pdir = dev.paths.root / "prometheus"
    pdir.mkdir(parents=True, exist_ok=True)
    pki = dev.paths.pki
    config = prometheus.scrape_config(
        dev.server,
        pki / "ca.crt",
        pki / "admin.crt",
        pki / "admin.key",
        nodes=[NODE_NAME],
    )
    (pdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    # a restarted Prometheus keeps its address: the operator was given it at its start
    previous = (read_state(dev.paths).get("urls") or {}).get("prometheus", "")
    if previous and not _listening(int(previous.rsplit(":", 1)[1])):
        # Prometheus binds with SO_REUSEADDR: its old connections in TIME_WAIT do not matter
        port = int(previous.rsplit(":", 1)[1])
    else:
        port = free_port(prometheus.DEFAULT_PORT)
    url = f"http://127.0.0.1:{port}"
    state = _set_url(dev, "prometheus", url)
    dev._step(f"Prometheus on {url}")
    argv = prometheus.argv(binary, pdir / "prometheus.yml", pdir / "data", port)
    host_ip = (state.get("node") or {}).get("hostIP")
    if host_ip:  # also on the node link: an in-cluster operator queries it from a pod
        argv.insert(-2, f"--web.listen-address={host_ip}:{port}")
    proc = dev._spawn("prometheus", argv, state)
    dev._wait(
        "prometheus", lambda: http_ok(f"{url}/-/ready"), proc, str(dev.paths.log("prometheus"))
    )


def apply_crds(dev: DevCluster) -> None:
    from .state import DevClusterError

    files = sorted(CRDS_DIR.glob("*.yaml"))
    if not files:
        raise DevClusterError(f"CRDs: no *.yaml in {CRDS_DIR}")
    dev._step(f"CRDs from {CRDS_DIR.relative_to(REPO)}/")
    args = ["apply", "--server-side", "--force-conflicts"]
    for f in files:
        args += ["-f", str(f)]
    dev.kubectl(*args)
    dev.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"-f={f}" for f in files))


def check_operator_importable() -> None:
    """Fail naming the missing part when the operator package is not in this venv (never
    skip it: a cluster without its operator makes every test of the whole loop vacuous)."""
    from .state import DevClusterError

    try:
        found = importlib.util.find_spec("berth_operator.main") is not None
    except (ImportError, ValueError) as err:
        raise DevClusterError(f"operator: cannot import berth_operator ({err})") from None
    if not found:
        raise DevClusterError(
            "operator: berth_operator.main is missing from this venv; "
            "install the workspace with `make venv` (uv sync --all-packages)"
        )


def apply_admission_policy(dev: DevCluster) -> None:
    """The tenant allowlists' ValidatingAdmissionPolicy, when BERTH_OPERATOR_TENANT_* set any."""
    import yaml
    from berth_operator import admission
    from berth_operator.settings import from_env

    settings = from_env()
    if not admission.configured(settings):
        return
    namespace = settings.network.berth_namespace
    dev._step(
        f"admission: ValidatingAdmissionPolicy {admission.POLICY_NAME} (params in {namespace})"
    )
    dev.kubectl("create", "namespace", namespace, check=False)
    # One object per call, params first (a batch re-apply can leave the params unfound:
    # kubernetes/kubernetes#133827).
    for obj in admission.manifests(settings):
        text = yaml.safe_dump(obj)
        dev.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=text)


IN_CLUSTER_KEY = "operatorRelease"  # state.json: the chart release of an in-cluster operator


def start_operator_in_cluster(dev: DevCluster) -> None:
    """The operator as users get it: `helm upgrade --install` of charts/berth, the operator
    image (imported into the node) running on local-node-0 under its ServiceAccount."""
    from . import chart
    from .state import DevClusterError, read_state, write_state

    if _component_running(dev, "berth-operator"):
        return  # a host-process operator of an earlier `up`: keep it, never two operators
    state = read_state(dev.paths)
    prom = (state.get("urls") or {}).get("prometheus", "")
    host_ip = (state.get("node") or {}).get("hostIP", "")
    # from a pod, Prometheus is on the node link's host side (it listens there too)
    prom_for_pods = prom.replace("127.0.0.1", host_ip) if prom and host_ip else ""
    dev._step(
        f"operator: helm upgrade --install {chart.RELEASE} charts/berth -n {chart.NAMESPACE} "
        f"(in-cluster on {NODE_NAME}; Prometheus {prom_for_pods or 'none'})"
    )
    try:
        values = chart.local_values(prom_for_pods)
        gateway_url = (state.get("urls") or {}).get("berth-gateway", "")
        if gateway_url:  # status.url: the address users reach models at (the host gateway)
            values["operator"]["extraEnv"] = [
                {"name": "BERTH_OPERATOR_GATEWAY_URL", "value": gateway_url}
            ]
        seconds = chart.install(dev.paths.kubeconfig, values)
    except chart.ChartError as err:
        raise DevClusterError(
            f"operator: {err}; read `kubectl -n {chart.NAMESPACE} describe pods`"
        ) from None
    state = read_state(dev.paths)
    state[IN_CLUSTER_KEY] = {"release": chart.RELEASE, "namespace": chart.NAMESPACE}
    write_state(dev.paths, state)
    dev._step(f"operator: installed with the chart in {seconds:.0f}s")


def in_cluster_operator_replicas(dev: DevCluster) -> int:
    """Replicas of the dev cluster's own chart-installed operator (0 when absent). Read from
    the API, not state.json: etcd outlives `down`, so a later `up` brings it back."""
    from . import chart

    proc = dev.kubectl("-n", chart.NAMESPACE, "get", f"deployment/{chart.RELEASE}-operator",
                       "-o", "jsonpath={.spec.replicas}", check=False)  # fmt: skip
    text = proc.stdout.strip()
    return int(text) if proc.returncode == 0 and text.isdigit() else 0


def stop_operator_in_cluster(dev: DevCluster) -> bool:
    """Scale the in-cluster operator to zero (a test that runs its own operator); whether it ran."""
    from . import chart
    from .state import read_state, write_state

    state = read_state(dev.paths)
    if state.pop(IN_CLUSTER_KEY, None) is not None:
        write_state(dev.paths, state)
    if not in_cluster_operator_replicas(dev):
        return False
    dev.kubectl("-n", chart.NAMESPACE, "scale", f"deployment/{chart.RELEASE}-operator",
                "--replicas=0", check=False)  # fmt: skip
    dev.kubectl("-n", chart.NAMESPACE, "wait", "--for=delete", "pod", "--timeout=60s",
                "-l", "app.kubernetes.io/component=operator", check=False)  # fmt: skip
    return True


def start_operator(dev: DevCluster, in_cluster: bool = False) -> None:
    from .state import free_port, http_ok, read_state

    apply_crds(dev)
    apply_admission_policy(dev)
    if in_cluster:
        start_operator_in_cluster(dev)
        return
    if _component_running(dev, "berth-operator"):
        return
    check_operator_importable()  # fails naming the missing part, never skips
    stop_operator_in_cluster(dev)  # never two operators: the process replaces it
    port = free_port()
    state = _set_url(dev, "berth-operator", f"http://127.0.0.1:{port}/healthz")
    # the autoscaler queries the local Prometheus (when it runs; else models hold replicas)
    prometheus_url = (state.get("urls") or {}).get("prometheus", "")
    dev._step(
        f"operator: berth operator run (health :{port}, Prometheus {prometheus_url or 'none'})"
    )
    proc = dev._spawn(
        "berth-operator",
        [
            BERTH,
            "operator",
            "run",
            f"--liveness=http://127.0.0.1:{port}/healthz",
        ],
        state,
        env={
            "KUBECONFIG": str(dev.paths.kubeconfig),
            "BERTH_OPERATOR_AUTOSCALING_PROMETHEUS_URL": prometheus_url,
            "BERTH_OPERATOR_GATEWAY_URL": (state.get("urls") or {}).get("berth-gateway", ""),
        },
    )
    url = read_state(dev.paths)["urls"]["berth-operator"]
    dev._wait(
        "operator", lambda: http_ok(url), proc, str(dev.paths.log("berth-operator")), timeout=60
    )


def start_node(dev: DevCluster) -> None:
    """The real node in the sandbox `up` made (kept when it runs)."""
    from . import node
    from .netplan import NodeNet, cluster_tag
    from .pki import Pki
    from .state import DevClusterError, read_state

    if _component_running(dev, "kubelet"):
        return
    state = read_state(dev.paths)
    holder = state.get("components", {}).get("node-sandbox", {}).get("pid")
    if not holder or not _component_running(dev, "node-sandbox"):
        raise DevClusterError(
            "real node: the node sandbox is not running; `berth dev down` then `up`"
        )
    try:
        node.check_host()
        net = NodeNet(int(state["node"]["index"]), cluster_tag(dev.paths.root))
        node.start(dev, state, net, Pki(dev.paths.pki), int(holder))
    except node.NodeError as err:
        raise DevClusterError(f"real node: {err}") from None


def start(dev: DevCluster, addons: Addons) -> None:
    """Start the selected addons in dependency order."""
    if addons.node:
        start_node(dev)
    if addons.prometheus:
        start_prometheus(dev)
    if addons.operator:
        from .gateway import start_gateway

        start_gateway(dev)  # first: the operator is given its address (status.url)
        start_operator(dev, in_cluster=addons.operator_in_cluster and addons.node)
    if addons.examples:
        from .examples import deploy_examples

        deploy_examples(dev)
