"""The dev cluster's real node: kubelet + containerd + runc + CNI + kube-proxy.

Pods from the locally built Berth image run as containers on `local-node-0`, get
addresses from the cluster's pod range, are probed by the kubelet and reached through
ClusterIP Services from the host (kube-proxy's iptables rules in the node's namespace).
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

IMAGE = "localhost/berth/runtime:dev"
NODE = "local-node-0"


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def web_container(extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """A small HTTP server from the Berth image (its Python), restricted, probed."""
    return {
        "name": "web",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "http.server", "8080", "--directory", "/etc"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {
            "httpGet": {"path": "/hostname", "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        "env": [{"name": k, "value": v} for k, v in (extra_env or {}).items()],
        "securityContext": RESTRICTED,
    }


def pod_spec(containers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "nodeSelector": {"berth.dev/local-node": "true"},
        "tolerations": [
            {"key": "berth.dev/local-node", "operator": "Exists", "effect": "NoSchedule"}
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        **extra,
    }


def ready(pod: Any) -> bool:
    conds = (pod.status.conditions or []) if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conds)


def get(url: str, timeout: float = 3) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


@pytest.fixture(scope="module")
def node(cluster: Any) -> Any:
    from berth_dev.addons import Addons

    cluster.start_addons(Addons(node=True, prometheus=False, operator=False, examples=False))
    return cluster


def test_pod_runs_probed_with_a_pod_ip_and_serves_through_its_cluster_ip(
    node: Any, kube: Any, namespace: str
) -> None:
    from lightkube.resources.core_v1 import Pod, Service

    kube.create(
        Pod.from_dict(
            {
                "metadata": {"name": "web", "namespace": namespace, "labels": {"app": "web"}},
                "spec": pod_spec([web_container()]),
            }
        )
    )
    svc = kube.create(
        Service.from_dict(
            {
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
            }
        )
    )
    pod = wait_for(
        "the pod to pass its readiness probe",
        lambda: (p := kube.get(Pod, "web", namespace=namespace)) and ready(p) and p,
        timeout=120,
    )
    assert pod.spec.nodeName == NODE
    pods = ipaddress.ip_network(node.state["node"]["podCIDR"])
    assert ipaddress.ip_address(pod.status.podIP) in pods
    assert pod.status.containerStatuses[0].containerID.startswith("containerd://")
    assert pod.status.containerStatuses[0].imageID  # a real image on the node
    cluster_ip = svc.spec.clusterIP
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(
        node.state["node"]["serviceCIDR"]
    )
    # from the host: straight to the pod, then through kube-proxy's rules
    assert get(f"http://{pod.status.podIP}:8080/hostname").strip() == "web"
    body = wait_for(
        "the ClusterIP to answer",
        lambda: _try(lambda: get(f"http://{cluster_ip}/hostname")),
        timeout=30,
    )
    assert body.strip() == "web"


def _try(fn: Callable[[], str]) -> str | None:
    try:
        return fn()
    except (urllib.error.URLError, OSError):
        return None


def test_restricted_namespace_admits_berth_model_pods_and_rejects_privileged(
    node: Any, kube: Any, namespace: str
) -> None:
    from berth_operator.builders import deployment
    from berth_operator.settings import Settings
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import Namespace, Pod

    kube.patch(
        Namespace,
        namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    md = {
        "metadata": {
            "name": "m",
            "namespace": namespace,
            "uid": "00000000-0000-0000-0000-000000000001",
        },
        "spec": {"model": {"uri": "pvc://models/m", "format": "torchscript"}},
    }
    template = deployment(md, Settings())["spec"]["template"]
    berth = Pod.from_dict({"metadata": {"name": "berth-model", "namespace": namespace, **{
        k: v for k, v in template["metadata"].items() if k == "labels"}}, "spec": template["spec"]})  # fmt: skip
    kube.create(berth, dry_run=True)  # admitted (a dry run passes every admission step)
    privileged = Pod.from_dict(
        {
            "metadata": {"name": "privileged", "namespace": namespace},
            "spec": pod_spec(
                [{"name": "c", "image": IMAGE, "securityContext": {"privileged": True}}]
            ),
        }
    )
    with pytest.raises(ApiError) as err:
        kube.create(privileged)
    assert err.value.status.code == 403
    assert "violates PodSecurity" in str(err.value.status.message)
    assert "privileged" in str(err.value.status.message)


SA_SCRIPT = r"""
import json, os, ssl, urllib.request
d = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
ctx = ssl.create_default_context(cafile=f"{d}/ca.crt")
req = urllib.request.Request(
    f"https://{host}:{port}/apis/authentication.k8s.io/v1/selfsubjectreviews",
    data=json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode(),
    headers={"Authorization": "Bearer " + open(f"{d}/token").read(),
             "Content-Type": "application/json"}, method="POST")
print("USER=" + json.load(urllib.request.urlopen(req, context=ctx))["status"]["userInfo"]["username"])
"""


def test_projected_service_account_token_works_from_inside_the_pod(
    node: Any, kube: Any, namespace: str
) -> None:
    from lightkube.resources.core_v1 import Pod

    c = {**web_container(), "name": "probe", "command": ["python", "-c", SA_SCRIPT]}
    c.pop("readinessProbe")
    c.pop("ports")
    kube.create(
        Pod.from_dict(
            {
                "metadata": {"name": "sa", "namespace": namespace},
                "spec": pod_spec([c], restartPolicy="Never"),
            }
        )
    )
    pod = wait_for(
        "the pod to finish",
        lambda: (
            (p := kube.get(Pod, "sa", namespace=namespace))
            and p.status.phase in ("Succeeded", "Failed")
            and p
        ),
        timeout=120,
    )
    logs = node.kubectl("logs", "-n", namespace, "sa").stdout
    assert pod.status.phase == "Succeeded", logs
    assert f"USER=system:serviceaccount:{namespace}:default" in logs


def test_rollout_under_steady_requests_loses_none(node: Any, kube: Any, namespace: str) -> None:
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.core_v1 import Pod, Service

    c = web_container({"VERSION": "1"})
    c["lifecycle"] = {"preStop": {"sleep": {"seconds": 3}}}  # the endpoints go first
    dep = {
        "metadata": {"name": "roll", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "roll"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "minReadySeconds": 1,
            "template": {
                "metadata": {"labels": {"app": "roll"}},
                "spec": pod_spec([c], terminationGracePeriodSeconds=10),
            },
        },
    }
    kube.create(Deployment.from_dict(dep))
    svc = kube.create(
        Service.from_dict(
            {
                "metadata": {"name": "roll", "namespace": namespace},
                "spec": {
                    "selector": {"app": "roll"},
                    "ports": [{"port": 80, "targetPort": "http"}],
                },
            }
        )
    )

    def available() -> bool:
        d = kube.get(Deployment, "roll", namespace=namespace)
        st = d.status
        return bool(
            st
            and st.observedGeneration == d.metadata.generation
            and st.updatedReplicas == 2
            and st.availableReplicas == 2
            and (st.replicas or 0) == 2
        )

    wait_for("the first rollout", available, timeout=180)
    url = f"http://{svc.spec.clusterIP}/hostname"
    wait_for("the ClusterIP to answer", lambda: _try(lambda: get(url)), timeout=30)
    results: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                results.append(get(url, timeout=5).strip())
            except (urllib.error.URLError, OSError) as err:
                failures.append(repr(err))
            time.sleep(0.02)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:
        wait_for("answers from the old pods", lambda: len(results) >= 5, timeout=30)
        kube.patch(
            Deployment,
            "roll",
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": "web", "env": [{"name": "VERSION", "value": "2"}]}
                            ]
                        }
                    }
                }
            },
            namespace=namespace,
        )
        wait_for("the second rollout", available, timeout=180)

        def old_pods_gone() -> bool:
            pods = list(kube.list(Pod, namespace=namespace, labels={"app": "roll"}))
            return len(pods) == 2 and not any(p.metadata.deletionTimestamp for p in pods)

        # the old pods' preStop and termination, then answers from the new ones only
        wait_for("the old pods to terminate", old_pods_gone, timeout=120)
        done = len(results)
        wait_for("answers from the new pods", lambda: len(results) >= done + 5, timeout=30)
    finally:
        stop.set()
        t.join(10)
    old = set(results[:5])
    new = set(results[-5:])
    print(f"\n{len(results)} requests during the rollout, {len(failures)} failed")
    assert not failures, failures[:5]
    assert len(results) > 50
    assert not (old & new), f"the pods were not replaced: {old} {new}"


def test_dev_status_lists_the_node_components(node: Any) -> None:
    st = node.status()
    for name in ("node-sandbox", "containerd", "kubelet", "kube-proxy"):
        assert st["components"][name]["state"] == "running", st["components"].get(name)
    assert json.loads(json.dumps(st)) == st  # plain data: JSON round-trips it unchanged
