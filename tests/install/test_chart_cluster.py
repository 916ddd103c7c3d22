"""The chart on the real local control plane and its real node (local-node-0).

- `helm template` output accepted by the API server (server-side dry run), per value set;
- the operator's effective permissions (`kubectl auth can-i --list`) equal the
  documented least-privilege set (charts/berth/README.md) in both RBAC modes;
- `helm install` into a namespace that enforces the `restricted` Pod Security level: the
  operator runs in-cluster (operator image, its own ServiceAccount token) and reconciles
  a ModelDeployment; two replicas, one active through a Lease;
- the chart's gateway (a Deployment on the real node) lists models through its ClusterIP
  and wakes a model at zero: a real runtime pod starts, the held request is answered, and
  the gateway's WokenByGateway Event is there;
- killing the active replica during a churn of 50 ModelDeployments: the standby takes
  over, every model converges, no duplicate or orphaned child;
- `helm upgrade` to a new chart version with a changed value (the pre-upgrade Job
  applies the CRDs), then `helm uninstall`: only the CRDs and the user's
  ModelDeployments are left.

The dev cluster's own (host-process) operator is stopped for this module and restarted
after it, so that only the in-cluster operator acts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from install_helpers import CHART, Helm

ON_THE_REAL_NODE = {
    # no CPU request: on a reused `make up` cluster the examples hold the node's 2 CPUs
    "resources": {"requests": {"cpu": "0", "memory": "64Mi"}},
    "nodeSelector": {"berth.dev/local-node": "true"},
    "tolerations": [{"key": "berth.dev/local-node", "operator": "Exists", "effect": "NoSchedule"}],
}
LOCAL_NODE = {
    "operator": ON_THE_REAL_NODE,
    # the gateway (runtime image) on the real node too: one replica is enough here
    "gateway": {**ON_THE_REAL_NODE, "replicas": 1},
}
RELEASE = "berth-it"
OPERATOR = f"{RELEASE}-operator"  # fullname: the release name contains "berth"
GATEWAY = f"{RELEASE}-gateway"

# The documented least-privilege set (charts/berth/README.md): resource -> verbs.
NAMESPACED = {
    "modeldeployments.serving.berth.dev": "get list watch patch",
    "modeldeployments.serving.berth.dev/status": "get patch",
    "modeldeployments.serving.berth.dev/scale": "get patch",
    "deployments.apps": "get list watch create patch delete",  # delete: the canary's
    "services": "get list watch create patch delete",
    "podmonitors.monitoring.coreos.com": "get list watch create patch",
    "poddisruptionbudgets.policy": "get list watch create patch delete",
    "networkpolicies.networking.k8s.io": "get list watch create patch delete",
    "pods": "list watch",
    "events": "create patch",
    "events.events.k8s.io": "create patch",
}
CLUSTER = {
    "scalingpolicies.serving.berth.dev": "get list watch",
    "scalingpolicies.serving.berth.dev/status": "get patch",
    "customresourcedefinitions.apiextensions.k8s.io": "get list watch",
    "namespaces": "list watch",
}
# The gateway's documented set (charts/berth/README.md), where it routes.
GATEWAY_RULES = {
    "modeldeployments.serving.berth.dev": "list watch",
    "modeldeployments.serving.berth.dev/scale": "patch",
    "endpointslices.discovery.k8s.io": "list watch",
    "events": "create",
}
ROW = re.compile(r"^(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def kubectl(cluster: Any, *args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 180, every: float = 1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def can_i(cluster: Any, sa: str, namespace: str) -> set[tuple[str, str, str]]:
    """(resource, resource names, verb) rows of `kubectl auth can-i --list` for `sa`."""
    out = kubectl(cluster, "auth", "can-i", "--list", f"--as={sa}", "-n", namespace)
    rows = set()
    for line in out.splitlines()[1:]:
        m = ROW.match(line)
        if m:  # resource rows only; the non-resource URLs are everyone's discovery rights
            for verb in m.group(4).split():
                rows.add((m.group(1), m.group(3), verb))
    return rows


def granted(cluster: Any, release_ns: str, sa: str, namespace: str) -> set[tuple[str, str, str]]:
    """What the chart grants `sa` in `namespace`: its rows less an unbound account's."""
    nobody = f"system:serviceaccount:{release_ns}:nobody-{uuid.uuid4().hex[:5]}"
    return can_i(cluster, sa, namespace) - can_i(cluster, nobody, namespace)


def expected(*tables: dict[str, str]) -> set[tuple[str, str, str]]:
    return {
        (res, "", verb)
        for table in tables
        for res, verbs in table.items()
        for verb in verbs.split()
    }


def lease_rows(lease: str) -> set[tuple[str, str, str]]:
    return {("leases.coordination.k8s.io", lease, v) for v in ("get", "update")}


def create_namespace(cluster: Any, name: str, restricted: bool = False) -> None:
    labels = {"berth.dev/test": "true"}
    if restricted:
        for mode in ("enforce", "warn", "audit"):
            labels[f"pod-security.kubernetes.io/{mode}"] = "restricted"
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(doc))


def drop_namespace(cluster: Any, name: str) -> None:
    # ModelDeployments left after an uninstall keep Kopf's finalizer: no operator removes it
    out = kubectl(cluster, "get", "md", "-n", name, "-o", "name", check=False)
    for obj in out.split():
        kubectl(cluster, "patch", "-n", name, obj, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip
    kubectl(cluster, "delete", "namespace", name, "--wait=false", check=False)


def model_doc(name: str, namespace: str, replicas: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "serving.berth.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"uri": f"file:///models/{name}", "format": "torchscript"},
                 "replicas": replicas},
    }  # fmt: skip


def get_json(cluster: Any, *args: str) -> dict[str, Any]:
    return dict(json.loads(kubectl(cluster, "get", *args, "-o", "json")))


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def node_cluster(cluster: Any) -> Iterator[Any]:
    """The shared cluster with its real node (the operator image imported), the host
    operator stopped while this module runs."""
    from berth_dev.addons import Addons
    from berth_dev.images import ensure_imported
    from berth_dev.node import node_dir

    cluster.start_addons(Addons(node=True, prometheus=False, operator=False, examples=False))
    # a node started earlier in this session may hold an older operator image
    # and the runtime image: the chart's gateway runs it (imported once per node)
    ensure_imported(cluster, node_dir(cluster.paths.root) / "containerd.sock", runtime=True)
    crds = sorted(str(p) for p in (CHART / "crds").glob("*.yaml"))
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", *(f"-f={c}" for c in crds))
    from berth_dev.addons import in_cluster_operator_replicas

    in_cluster = in_cluster_operator_replicas(cluster) > 0  # a `make up` cluster's operator
    had_operator = cluster.stop_component("berth-operator")
    from kube_helpers import operator_pids

    # no host operator (a test's own, leaked) may converge models behind the chart's
    # replicas: the standby-takeover test would pass with failover broken
    assert not operator_pids(cluster), "a host operator still reconciles this cluster"
    try:
        yield cluster
    finally:
        if had_operator:  # put back what ran before, in the same form
            cluster.start_addons(
                Addons(node=True, prometheus=False, operator=True, examples=False,
                       operator_in_cluster=in_cluster)
            )  # fmt: skip


@pytest.fixture(scope="module")
def release(node_cluster: Any, helm: Helm) -> Iterator[dict[str, Any]]:
    """The chart installed in a restricted namespace, serving one models namespace."""
    suffix = uuid.uuid4().hex[:5]
    ns, models = f"berth-rs-{suffix}", f"berth-models-{suffix}"
    create_namespace(node_cluster, ns, restricted=True)
    create_namespace(node_cluster, models)
    values = {**LOCAL_NODE, "rbac": {"scope": "namespaces", "namespaces": [models]}}
    t0 = time.monotonic()
    proc = helm("install", RELEASE, str(CHART), "--namespace", ns, "--values", "-", "--wait",
                "--timeout=300s", "--take-ownership", kubeconfig=node_cluster.kubeconfig,
                stdin=json.dumps(values), timeout=400)  # fmt: skip
    install_s = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    print(f"\nhelm install --wait: {install_s:.1f}s")
    info = {"ns": ns, "models": models, "values": values, "install_s": install_s,
            "uninstalled": False}  # fmt: skip
    try:
        yield info
    finally:
        if not info["uninstalled"]:
            helm("uninstall", RELEASE, "--namespace", ns, "--wait",
                 kubeconfig=node_cluster.kubeconfig)  # fmt: skip
        drop_namespace(node_cluster, models)
        drop_namespace(node_cluster, ns)


def holder(cluster: Any, ns: str, lease_name: str = OPERATOR) -> str:
    lease = get_json(cluster, "lease", lease_name, "-n", ns)
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def operator_pods(cluster: Any, ns: str) -> list[dict[str, Any]]:
    pods = get_json(cluster, "pods", "-n", ns, "-l", "app.kubernetes.io/component=operator")
    return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]


def converged(cluster: Any, ns: str, names: set[str]) -> bool:
    mds = {m["metadata"]["name"]: m for m in get_json(cluster, "md", "-n", ns)["items"]}
    if set(mds) != names:
        return False
    return all(
        (m.get("status") or {}).get("observedGeneration") == m["metadata"]["generation"]
        for m in mds.values()
    )


def children_by_owner(cluster: Any, ns: str, kind: str) -> dict[str, list[str]]:
    """owner uid -> names of the `kind` children Berth manages in `ns`."""
    items = get_json(cluster, kind, "-n", ns, "-l", "app.kubernetes.io/managed-by=berth-operator")
    out: dict[str, list[str]] = {}
    for obj in items["items"]:
        refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")]
        out.setdefault(refs[0]["uid"] if refs else "", []).append(obj["metadata"]["name"])
    return out


# -- tests -------------------------------------------------------------------------------
DRY_RUN_VALUES = [
    pytest.param({}, id="defaults"),
    pytest.param({"rbac": {"scope": "namespaces"}}, id="namespaces"),
    pytest.param({"operator": {"replicas": 1, "leaderElection": {"enabled": False}}}, id="single"),
    pytest.param(LOCAL_NODE, id="local-node"),
    pytest.param({"gateway": {"enabled": False}}, id="no-gateway"),
    # podMonitor.enabled is linted (test_chart_render) but not dry-run: this cluster has
    # no Prometheus Operator CRD for the API server to check it against
]


@pytest.mark.integration
@pytest.mark.parametrize("values", DRY_RUN_VALUES)
def test_template_accepted_by_server_side_dry_run(
    cluster: Any, helm: Helm, namespace: str, values: dict[str, Any]
) -> None:
    values = json.loads(json.dumps(values))
    if values.get("rbac", {}).get("scope") == "namespaces":
        values["rbac"]["namespaces"] = [namespace]
    proc = helm("template", "berth-dry", str(CHART), "--namespace", namespace, "--include-crds",
                "--values", "-", stdin=json.dumps(values))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = kubectl(cluster, "apply", "--server-side", "--force-conflicts", "--dry-run=server",
                  "--field-manager=berth-dry-run", "-f", "-", stdin=proc.stdout)  # fmt: skip
    kinds = {d["kind"] for d in yaml.safe_load_all(proc.stdout) if d}
    assert len(out.splitlines()) == sum(1 for d in yaml.safe_load_all(proc.stdout) if d)
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "ScalingPolicy"} <= kinds


@pytest.mark.integration
def test_cluster_mode_permissions_equal_the_documented_set(cluster: Any, helm: Helm) -> None:
    ns = f"berth-rbac-{uuid.uuid4().hex[:5]}"
    create_namespace(cluster, ns)
    release = "rbac-c"
    values = {"operator": {"replicas": 0}, "gateway": {"replicas": 0},
              "defaultScalingPolicy": {"create": False}}  # fmt: skip
    try:
        proc = helm("install", release, str(CHART), "--namespace", ns, "--values", "-",
                    kubeconfig=cluster.kubeconfig, stdin=json.dumps(values))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        sa = f"system:serviceaccount:{ns}:{release}-berth-operator"
        lease = f"{release}-berth-operator"
        # any namespace: everything the operator needs, nothing more
        assert granted(cluster, ns, sa, "default") == expected(NAMESPACED, CLUSTER)
        # its own namespace adds its Lease, by name
        assert granted(cluster, ns, sa, ns) == expected(NAMESPACED, CLUSTER) | lease_rows(lease)
        for verb, what in (("get", "secrets"), ("delete", "pods"), ("create", "pods"),
                           ("update", "clusterroles")):  # fmt: skip
            out = kubectl(cluster, "auth", "can-i", verb, what, f"--as={sa}", "-A", check=False)
            assert out.strip() == "no", (verb, what)
        # the gateway: reads models and endpoints everywhere, writes only /scale and Events
        gw = f"system:serviceaccount:{ns}:{release}-berth-gateway"
        assert granted(cluster, ns, gw, "default") == expected(GATEWAY_RULES)
        assert granted(cluster, ns, gw, ns) == expected(GATEWAY_RULES)
        for verb, what in (("get", "secrets"), ("patch", "modeldeployments"),
                           ("update", "modeldeployments.serving.berth.dev/scale"),
                           ("list", "pods"), ("delete", "events")):  # fmt: skip
            out = kubectl(cluster, "auth", "can-i", verb, what, f"--as={gw}", "-A", check=False)
            assert out.strip() == "no", (verb, what)
    finally:
        helm("uninstall", release, "--namespace", ns, "--wait", kubeconfig=cluster.kubeconfig)
        kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.e2e
def test_in_cluster_operator_in_a_restricted_namespace_reconciles(
    node_cluster: Any, release: dict[str, Any]
) -> None:
    ns, models = release["ns"], release["models"]
    pods = wait_for("two operator pods Running", lambda: len([
        p for p in operator_pods(node_cluster, ns) if p["status"].get("phase") == "Running"
    ]) == 2 and operator_pods(node_cluster, ns))  # fmt: skip
    for pod in pods:
        spec = pod["spec"]
        assert spec["serviceAccountName"] == OPERATOR
        assert spec["nodeName"] == "local-node-0"  # the real node, not a KWOK one
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    active = wait_for("a Lease holder", lambda: holder(node_cluster, ns))
    assert active in {p["metadata"]["name"] for p in pods}
    kubectl(node_cluster, "apply", "-f", "-", stdin=json.dumps(model_doc("m1", models)))
    wait_for("m1 reconciled", lambda: converged(node_cluster, models, {"m1"}))
    md = get_json(node_cluster, "md", "m1", "-n", models)
    assert {c["type"] for c in md["status"]["conditions"]} >= {"Ready", "Progressing", "Degraded"}
    deploy = get_json(node_cluster, "deployment", "m1", "-n", models)
    assert deploy["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
    get_json(node_cluster, "service", "m1", "-n", models)
    # the namespace-limited operator cannot touch another namespace
    sa = f"system:serviceaccount:{ns}:{OPERATOR}"
    assert granted(node_cluster, ns, sa, models) == expected(NAMESPACED, CLUSTER)
    assert granted(node_cluster, ns, sa, "default") == expected(CLUSTER)
    assert granted(node_cluster, ns, sa, ns) == expected(CLUSTER) | lease_rows(OPERATOR)
    out = kubectl(node_cluster, "auth", "can-i", "patch", "deployments", f"--as={sa}",
                  "-n", "default", check=False)  # fmt: skip
    assert out.strip() == "no"


@pytest.mark.e2e
def test_in_cluster_gateway_lists_models_through_its_cluster_ip(
    node_cluster: Any, release: dict[str, Any]
) -> None:
    ns, models = release["ns"], release["models"]
    t0 = time.monotonic()
    pods = get_json(node_cluster, "pods", "-n", ns, "-l", "app.kubernetes.io/component=gateway")
    assert len(pods["items"]) == 1  # helm install --wait: Ready already
    pod = pods["items"][0]
    assert pod["spec"]["nodeName"] == "local-node-0"  # the real node, not a KWOK one
    assert pod["spec"]["serviceAccountName"] == GATEWAY
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
    # the labels each model's NetworkPolicy admits (operator settings.NetworkSettings)
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "berth"
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    kubectl(node_cluster, "apply", "-f", "-", stdin=json.dumps(model_doc("gw-listed", models)))
    ip = get_json(node_cluster, "service", GATEWAY, "-n", ns)["spec"]["clusterIP"]

    def listed(path: str) -> list[dict[str, Any]] | None:
        # from the host through kube-proxy's rules to the gateway pod on the real node
        try:
            with urllib.request.urlopen(f"http://{ip}{path}", timeout=5) as resp:
                assert resp.status == 200
                body = json.loads(resp.read())
        except (urllib.error.URLError, OSError):
            return None
        assert body["object"] == "list"
        data = [m for m in body["data"] if m["namespace"] == models]
        return data if any(m["id"] == "gw-listed" for m in data) else None

    data = wait_for("gw-listed in GET /v1/models", lambda: listed("/v1/models"), timeout=60)
    row = next(m for m in data if m["id"] == "gw-listed")
    assert row["ready"] is False  # replicas 0: no endpoint, listed all the same
    assert row["path_prefix"] == f"/ns/{models}"
    assert listed(f"/ns/{models}/v1/models")
    # the operator writes status.url through the gateway's Service
    url = f"http://{GATEWAY}.{ns}.svc/ns/{models}"
    wait_for("status.url through the gateway", lambda: (get_json(
        node_cluster, "md", "gw-listed", "-n", models).get("status") or {}).get("url") == url)  # fmt: skip
    # it may read and wake models only where the release serves them
    sa = f"system:serviceaccount:{ns}:{GATEWAY}"
    assert granted(node_cluster, ns, sa, models) == expected(GATEWAY_RULES)
    assert granted(node_cluster, ns, sa, "default") == set()
    assert granted(node_cluster, ns, sa, ns) == set()
    # the module's later tests count the models namespace's ModelDeployments: leave none
    kubectl(node_cluster, "delete", "md", "gw-listed", "-n", models, "--timeout=120s")
    print(f"\ngateway listed the model {time.monotonic() - t0:.1f}s after install")


@pytest.mark.e2e
def test_in_cluster_gateway_wakes_a_model_at_zero(
    node_cluster: Any, release: dict[str, Any]
) -> None:
    """A request through the chart's gateway (its ClusterIP, not a host process) for a
    model at zero: the gateway patches /scale under its own ServiceAccount, the in-cluster
    operator starts a real runtime pod on the real node, the held request succeeds, and
    the gateway's WokenByGateway Event is there."""
    import warnings

    from berth_dev.examples import claim_manifests
    from berth_dev.weights import write_cnn

    ns, models = release["ns"], release["models"]
    weights = Path(node_cluster.paths.root) / "pvc" / models / "models"
    weights.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torch.jit.script's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        write_cnn(weights)
    pv = f"berth-wake-{models}"[:60]
    kubectl(node_cluster, "apply", "-f", "-", stdin=claim_manifests(models, weights, pv))
    doc = {
        "apiVersion": "serving.berth.dev/v1alpha1",
        "kind": "ModelDeployment",
        # the runtime container's start can take over the default 60 s on a busy machine
        "metadata": {"name": "gw-wake", "namespace": models,
                     "annotations": {"serving.berth.dev/hold-deadline-seconds": "300"}},
        "spec": {
            "model": {"uri": "pvc://models/small-cnn", "format": "torchscript"},
            "replicas": 0,
            # no CPU limit is set: a small request fits beside a `make up` cluster's examples
            "resources": {"cpu": "10m", "memory": "1Gi"},
            "scheduling": {k: ON_THE_REAL_NODE[k] for k in ("nodeSelector", "tolerations")},
        },
    }  # fmt: skip
    ip = get_json(node_cluster, "service", GATEWAY, "-n", ns)["spec"]["clusterIP"]
    body = json.dumps({"inputs": [{"name": "input__0", "datatype": "FP32",
                                   "shape": [1, 3, 32, 32], "data": [0.5] * 3072}]}).encode()  # fmt: skip
    try:
        kubectl(node_cluster, "apply", "-f", "-", stdin=json.dumps(doc))

        def listed() -> bool:
            try:
                with urllib.request.urlopen(f"http://{ip}/ns/{models}/v1/models", timeout=5) as r:
                    return any(m["id"] == "gw-wake" for m in json.loads(r.read())["data"])
            except (urllib.error.URLError, OSError):
                return False

        wait_for("gw-wake listed by the in-cluster gateway", listed, timeout=60)
        assert get_json(node_cluster, "md", "gw-wake", "-n", models)["spec"]["replicas"] == 0
        t0 = time.monotonic()
        req = urllib.request.Request(
            f"http://{ip}/ns/{models}/v2/models/gw-wake/infer", data=body, method="POST",
            headers={"content-type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=320) as resp:
            assert resp.status == 200
            out = json.loads(resp.read())
            cold = resp.headers.get("Berth-Cold-Start")
        took = time.monotonic() - t0
        assert out["outputs"][0]["shape"] == [1, 10], out
        assert cold is not None and float(cold) > 0  # the request met the cold start
        md = get_json(node_cluster, "md", "gw-wake", "-n", models)
        assert md["spec"]["replicas"] == 1  # max(1, minReplicas), written through /scale
        pods = get_json(node_cluster, "pods", "-n", models, "-l",
                        "app.kubernetes.io/instance=gw-wake")["items"]  # fmt: skip
        assert [p["spec"]["nodeName"] for p in pods] == ["local-node-0"]  # a real container
        events = [e for e in get_json(node_cluster, "events", "-n", models)["items"]
                  if e["involvedObject"]["name"] == "gw-wake"
                  and e["reason"] == "WokenByGateway"]  # fmt: skip
        assert len(events) == 1, events
        assert events[0]["source"]["component"] == "berth-gateway"
        assert "scaled from 0 to 1" in events[0]["message"]
        print(f"\nwoken through the in-cluster gateway: first response after {took:.1f}s "
              f"(Berth-Cold-Start {cold})")  # fmt: skip
    finally:
        # the module's later tests count the models namespace's ModelDeployments: leave none
        kubectl(node_cluster, "delete", "md", "gw-wake", "-n", models, "--timeout=120s",
                check=False)  # fmt: skip
        kubectl(node_cluster, "delete", "pvc", "models", "-n", models, "--wait=false",
                check=False)  # fmt: skip
        kubectl(node_cluster, "delete", "pv", pv, "--wait=false", check=False)


@pytest.mark.e2e
def test_killing_the_active_replica_during_a_churn_of_50_models(
    node_cluster: Any, release: dict[str, Any]
) -> None:
    ns, models = release["ns"], release["models"]
    first = wait_for("a Lease holder", lambda: holder(node_cluster, ns))
    wait_for("a standby", lambda: len(operator_pods(node_cluster, ns)) == 2)
    names = [f"churn-{i:02d}" for i in range(50)]
    docs = "\n---\n".join(json.dumps(model_doc(n, models)) for n in names)
    kubectl(node_cluster, "apply", "-f", "-", stdin=docs)
    t_kill = time.monotonic()
    kubectl(node_cluster, "delete", "pod", first, "-n", ns, "--grace-period=0", "--force")
    # churn while nobody leads: delete ten, change ten
    gone = set(names[40:])
    kubectl(node_cluster, "delete", "md", "-n", models, "--wait=false", *sorted(gone))
    for n in names[30:40]:
        kubectl(node_cluster, "patch", "md", n, "-n", models, "--type=merge",
                "-p", '{"spec":{"runtime":{"batching":{"maxBatchSize":4}}}}')  # fmt: skip
    second = wait_for("a new Lease holder", lambda: (h := holder(node_cluster, ns)) != first and h)
    takeover_s = time.monotonic() - t_kill
    keep = {"m1", *names[:40]}
    wait_for("every model converged", lambda: converged(node_cluster, models, keep), timeout=300)
    converge_s = time.monotonic() - t_kill
    print(
        f"\ntakeover by {second}: {takeover_s:.1f}s after the kill; all converged: {converge_s:.1f}s"
    )
    uids = {m["metadata"]["uid"]: m["metadata"]["name"]
            for m in get_json(node_cluster, "md", "-n", models)["items"]}  # fmt: skip
    for kind in ("deployments", "services"):
        # wait for the garbage collector to remove the deleted models' children
        wait_for(f"no orphaned {kind}",
                 lambda k=kind: set(children_by_owner(node_cluster, models, k)) <= set(uids))  # fmt: skip
        owners = children_by_owner(node_cluster, models, kind)
        assert set(owners) == set(uids), f"{kind}: models without a child"
        dupes = {uids[u]: c for u, c in owners.items() if len(c) != 1}
        assert not dupes, f"duplicate {kind}: {dupes}"
        assert all(c == [uids[u]] for u, c in owners.items())
    for n in names[30:40]:
        deploy = get_json(node_cluster, "deployment", n, "-n", models)
        env = {
            e["name"]: e.get("value")
            for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["BERTH_MAX_BATCH_SIZE"] == "4", f"{n}: the change made during the takeover"


@pytest.mark.e2e
def test_upgrade_then_uninstall_leaves_only_crds_and_models(
    node_cluster: Any, release: dict[str, Any], helm: Helm, tmp_path: Path
) -> None:
    ns, models = release["ns"], release["models"]
    chart = tmp_path / "berth"
    shutil.copytree(CHART, chart)
    meta = (chart / "Chart.yaml").read_text().replace("version: 0.1.0", "version: 0.1.1")
    (chart / "Chart.yaml").write_text(meta)
    values = {**release["values"], "operator": {**release["values"]["operator"], "verbose": True}}
    proc = helm("upgrade", RELEASE, str(chart), "--namespace", ns, "--values", "-", "--wait",
                "--timeout=300s", kubeconfig=node_cluster.kubeconfig, stdin=json.dumps(values),
                timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    deploy = get_json(node_cluster, "deployment", OPERATOR, "-n", ns)
    assert deploy["metadata"]["labels"]["helm.sh/chart"] == "berth-0.1.1"
    assert "--verbose" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    # the pre-upgrade Job applied the CRDs (its field manager) and was removed after
    for crd in ("modeldeployments.serving.berth.dev", "scalingpolicies.serving.berth.dev"):
        managers = {
            f["manager"]
            for f in get_json(node_cluster, "crd", crd, "--show-managed-fields")["metadata"][
                "managedFields"
            ]
        }
        assert "berth-crds" in managers, managers
    assert not get_json(node_cluster, "jobs", "-n", ns)["items"]
    # the upgraded operator still reconciles
    kubectl(node_cluster, "apply", "-f", "-", stdin=json.dumps(model_doc("after-upgrade", models)))
    models_before = {
        m["metadata"]["name"] for m in get_json(node_cluster, "md", "-n", models)["items"]
    }
    wait_for("after-upgrade reconciled", lambda: converged(node_cluster, models, models_before))

    proc = helm("uninstall", RELEASE, "--namespace", ns, "--wait", "--timeout=180s",
                kubeconfig=node_cluster.kubeconfig)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    release["uninstalled"] = True
    selector = f"app.kubernetes.io/instance={RELEASE}"
    kinds = ("deployments,replicasets,pods,serviceaccounts,roles,rolebindings,"
             "poddisruptionbudgets,networkpolicies,leases,jobs,configmaps")  # fmt: skip
    wait_for("no namespaced object of the release",
             lambda: not get_json(node_cluster, kinds, "-n", ns, "-l", selector)["items"])  # fmt: skip
    for namespace in (ns, models):
        left = get_json(node_cluster, "roles,rolebindings,leases,jobs", "-n", namespace)["items"]
        assert not [o["metadata"]["name"] for o in left if RELEASE in o["metadata"]["name"]]
    cluster_left = get_json(
        node_cluster, "clusterroles,clusterrolebindings,scalingpolicies", "-l", selector
    )
    assert not cluster_left["items"]
    # Helm's release records are gone too
    assert not get_json(node_cluster, "secrets", "-n", ns, "-l", f"owner=helm,name={RELEASE}")[
        "items"
    ]
    # what stays: the CRDs and the user's ModelDeployments
    for crd in ("modeldeployments.serving.berth.dev", "scalingpolicies.serving.berth.dev"):
        get_json(node_cluster, "crd", crd)
    after = {m["metadata"]["name"] for m in get_json(node_cluster, "md", "-n", models)["items"]}
    assert after == models_before


@pytest.mark.e2e
def test_berth_dev_up_with_a_reachable_kubeconfig_installs_the_chart(
    node_cluster: Any, helm: Helm, tmp_path: Path
) -> None:
    # the local cluster plays "a cluster $KUBECONFIG names": `berth dev up` with another
    # dev directory says so and installs the chart into it instead of starting a cluster
    ns, models = f"berth-ext-{uuid.uuid4().hex[:5]}", f"berth-extm-{uuid.uuid4().hex[:5]}"
    create_namespace(node_cluster, models)
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({
        **LOCAL_NODE, "rbac": {"scope": "namespaces", "namespaces": [models]},
        "defaultScalingPolicy": {"create": False}, "operator": {**LOCAL_NODE["operator"], "replicas": 1},
    }))  # fmt: skip
    env = {**os.environ, "KUBECONFIG": str(node_cluster.kubeconfig),
           "BERTH_DEV_DIR": str(tmp_path / "dev")}  # fmt: skip
    berth = Path(sys.executable).parent / "berth"
    try:
        proc = subprocess.run(
            [str(berth), "dev", "up", "--values", str(values), "--release", "berth-ext",
             "--namespace", ns],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "KUBECONFIG already names a reachable cluster" in proc.stdout
        assert "Berth installed in" in proc.stdout
        # it prints the gateway's address (the chart's NOTES), through which models are reached
        assert f"http://berth-ext-gateway.{ns}.svc" in proc.stdout, proc.stdout
        assert "port-forward service/berth-ext-gateway 8088:80" in proc.stdout, proc.stdout
        assert not (tmp_path / "dev" / "state.json").exists()  # no local cluster started
        wait_for(
            "the operator running",
            lambda: holder(node_cluster, ns, "berth-ext-operator").startswith("berth-ext"),
        )
        kubectl(node_cluster, "apply", "-f", "-", stdin=json.dumps(model_doc("ext", models)))
        wait_for("ext reconciled", lambda: converged(node_cluster, models, {"ext"}))
    finally:
        helm("uninstall", "berth-ext", "--namespace", ns, "--wait",
             kubeconfig=node_cluster.kubeconfig)  # fmt: skip
        drop_namespace(node_cluster, models)
        drop_namespace(node_cluster, ns)
