"""Pure parts of the node agent: pod status, probes' timing, back-off, IPs, node, Prometheus."""

from __future__ import annotations

from pathlib import Path

import pytest
from berth_dev.agent import AgentSettings, IpPool, backoff_delay, node_manifest, node_status
from berth_dev.podstatus import ContainerRun, exit_reason, phase, pod_status
from berth_dev.probes import ProbeSpec, ProbeState, resolve_port
from berth_dev.prometheus import scrape_config

pytestmark = pytest.mark.unit

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
    "spec": {"containers": [{"name": "runtime"}], "restartPolicy": "Always"},
    "status": {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "True",
                "lastTransitionTime": "2024-01-01T00:00:00Z",
            },
            {"type": "Ready", "status": "False", "lastTransitionTime": "2024-01-01T00:00:01Z"},
        ]
    },
}


def test_ready_pod_status() -> None:
    run = ContainerRun(
        "runtime", "img", state="running", started_at=100.0, ready=True, started=True, pid=42
    )
    st = pod_status(POD, [run], pod_ip="127.0.2.1", host_ip="127.0.0.1", start_time=99.0, now=200.0)
    conds = {c["type"]: c for c in st["conditions"]}
    assert st["phase"] == "Running"
    assert st["podIP"] == "127.0.2.1" and st["podIPs"] == [{"ip": "127.0.2.1"}]
    assert conds["Ready"]["status"] == "True" and conds["ContainersReady"]["status"] == "True"
    assert conds["Ready"]["lastTransitionTime"] == "1970-01-01T00:03:20Z"  # changed: now
    assert conds["PodScheduled"]["lastTransitionTime"] == "2024-01-01T00:00:00Z"  # kept
    cs = st["containerStatuses"][0]
    assert (
        cs["ready"]
        and cs["started"]
        and cs["state"] == {"running": {"startedAt": "1970-01-01T00:01:40Z"}}
    )
    assert cs["containerID"] == "berth-agent://42"


def test_crashloop_status_keeps_last_state_and_restarts() -> None:
    run = ContainerRun(
        "runtime",
        "img",
        state="waiting",
        reason="CrashLoopBackOff",
        message="back-off 10s",
        restart_count=2,
    )
    run.last = {"exitCode": 1, "reason": "Error"}
    st = pod_status(POD, [run], pod_ip="127.0.2.1", host_ip="127.0.0.1", start_time=0.0, now=1.0)
    cs = st["containerStatuses"][0]
    assert cs["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
    assert cs["lastState"] == {"terminated": {"exitCode": 1, "reason": "Error"}}
    assert cs["restartCount"] == 2 and not cs["ready"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["lastTransitionTime"] == "2024-01-01T00:00:01Z"  # unchanged: kept
    assert conds["Ready"]["reason"] == "ContainersNotReady"
    assert st["phase"] == "Running"  # it ran before: a restarting pod stays Running


@pytest.mark.parametrize(
    ("policy", "state", "code", "started", "expected"),
    [
        ("Always", "waiting", None, None, "Pending"),  # never started yet
        ("Always", "running", None, 1.0, "Running"),
        ("Never", "terminated", 0, 1.0, "Succeeded"),
        ("Never", "terminated", 1, 1.0, "Failed"),
        ("OnFailure", "terminated", 0, 1.0, "Succeeded"),
        ("Always", "terminated", 0, 1.0, "Running"),  # about to restart
    ],
)
def test_phase(
    policy: str, state: str, code: int | None, started: float | None, expected: str
) -> None:
    pod = {"spec": {"restartPolicy": policy}}
    run = ContainerRun("c", "i", state=state, exit_code=code, started_at=started)
    assert phase(pod, [run]) == expected


@pytest.mark.parametrize(
    ("code", "sig", "reason"), [(0, None, "Completed"), (1, None, "Error"), (137, 9, "Error")]
)
def test_exit_reason(code: int, sig: int | None, reason: str) -> None:
    assert exit_reason(code, sig) == reason


@pytest.mark.parametrize(
    ("probe", "cap", "period", "failures"),
    [
        ({}, None, 10.0, 3),  # Kubernetes defaults
        (
            {"periodSeconds": 10, "failureThreshold": 90},
            1.0,
            1.0,
            900,
        ),  # the startup window is kept
        ({"periodSeconds": 5, "failureThreshold": 3}, 1.0, 1.0, 15),
        ({"periodSeconds": 1, "failureThreshold": 2}, 2.0, 1.0, 2),  # already faster than the cap
    ],
)
def test_probe_period_cap_keeps_the_time_window(
    probe: dict[str, int], cap: float | None, period: float, failures: int
) -> None:
    spec = ProbeSpec.from_pod({"httpGet": {"path": "/", "port": 80}, **probe}, cap)
    assert (spec.period, spec.failure_threshold) == (period, failures)


def test_probe_state_thresholds() -> None:
    state = ProbeState(ProbeSpec({}, success_threshold=2, failure_threshold=2))
    assert not state.record(True, "") and not state.ok  # one success is not enough
    assert state.record(True, "") and state.ok
    assert not state.record(False, "") and state.ok  # one failure is not enough
    assert state.record(False, "x") and not state.ok and state.failed


def test_resolve_port() -> None:
    assert resolve_port("http", {"http": 8080}) == 8080
    assert resolve_port(9000, {}) == 9000
    with pytest.raises(ValueError, match="metrics"):
        resolve_port("metrics", {"http": 8080})


def test_backoff() -> None:
    assert [backoff_delay(n, 10, 300) for n in range(7)] == [0, 10, 20, 40, 80, 160, 300]


def test_ip_pool_is_stable_and_distinct() -> None:
    pool = IpPool({"a": "127.0.2.1"})
    assert pool.get("a") == "127.0.2.1"
    b = pool.get("b")
    assert b == "127.0.2.2"
    pool.release("a")
    assert pool.get("c") == "127.0.2.1"  # freed addresses are reused
    assert pool.get("b") == b


def test_local_node_is_not_kwok_managed() -> None:
    s = AgentSettings(root=Path("/r"), kubeconfig=Path("/k"))
    m = node_manifest(s, 2, "NVIDIA-L4")
    assert "annotations" not in m["metadata"]
    labels = m["metadata"]["labels"]
    assert labels["berth.dev/local-agent"] == "true"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-L4"
    assert labels.get("type") != "kwok"
    # only pods that opt in land here; no GPU taint, so CPU models can opt in too
    assert m["spec"]["taints"] == [
        {"key": "berth.dev/local-agent", "value": "true", "effect": "NoSchedule"}
    ]
    st = node_status(s, 2, "2024-01-01T00:00:00Z")
    assert st["capacity"]["nvidia.com/gpu"] == "2" and st["allocatable"] == st["capacity"]
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    assert "nvidia.com/gpu.product" not in node_manifest(s, 0, "x")["metadata"]["labels"]


def test_prometheus_config_keeps_annotated_agent_pods() -> None:
    cfg = scrape_config(
        "https://127.0.0.1:6443", Path("/ca"), Path("/c"), Path("/k"), nodes=["local-0"]
    )
    job = cfg["scrape_configs"][0]
    sd = job["kubernetes_sd_configs"][0]
    assert sd["api_server"] == "https://127.0.0.1:6443" and sd["tls_config"]["ca_file"] == "/ca"
    assert sd["selectors"] == [{"role": "pod", "field": "spec.nodeName=local-0"}]
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep[0]["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"__address__", "__metrics_path__", "namespace", "pod", "node"} <= targets
