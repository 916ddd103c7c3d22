"""The autoscaler with real runtime pods on the dev cluster's real node and real load.

A small TorchScript CNN whose batcher waits up to 200 ms for a batch to fill, so each of
16 closed-loop clients keeps about one request in flight: 16 in-flight requests against
a target of 4 per replica. The load generator is bench's (`berth_bench.loadgen`), aimed
at the first pod's own address (so every request reaches one replica, however many there are).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from autoscaling_helpers import (
    LOCAL_NODE,
    apply,
    condition,
    events,
    kget,
    model,
    policy,
    replicas,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

TICK, SCRAPE = 2.0, 2.0
WINDOWS = {"stableSeconds": 10, "panicSeconds": 4}
DELAY = 6


def pv_and_claim(ns: str, path: Path) -> str:
    from berth_dev.examples import claim_manifests

    return claim_manifests(ns, path, f"berth-as-{ns}", {"berth.dev/test": "true"})


def ready_pods(kube: Any, ns: str) -> list[Any]:
    from lightkube.resources.core_v1 import Pod

    out = []
    for p in kube.list(Pod, namespace=ns, labels={"app.kubernetes.io/instance": "cnn"}):
        conds = (p.status.conditions or []) if p.status else []
        if any(c.type == "Ready" and c.status == "True" for c in conds):
            out.append(p)
    return out


def inflight(pod_ip: str) -> float:
    """The runtime's own count of requests being served (its /metrics)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{pod_ip}:8080/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == "berth_inflight_requests")  # fmt: skip


def test_load_step_scales_up_in_panic_and_back_down(
    scaling_stack: Any, kube: Any, namespace: str, tmp_path: Path
) -> None:
    from berth_dev.weights import write_cnn
    from lightkube.resources.core_v1 import PersistentVolume

    c, ns = scaling_stack, namespace
    models = c.paths.root / "pvc" / ns / "models"
    models.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torch.jit.script's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        write_cnn(models)
    c.kubectl("apply", "-f", "-", input=pv_and_claim(ns, models))
    pname = f"load-{ns}"[:60]
    apply(c, policy(pname, windows=WINDOWS, panicThreshold=2,
                    rates={"maxScaleUpRate": 10, "maxScaleDownRate": 10,
                           "scaleDownDelaySeconds": DELAY}))  # fmt: skip
    try:
        apply(c, model(
            "cnn",
            {"minReplicas": 1, "maxReplicas": 4, "metric": {"type": "concurrency", "target": 4},
             "policyRef": {"name": pname}},
            model={"uri": "pvc://models/small-cnn", "format": "torchscript"},
            runtime={"batching": {"maxBatchSize": 64, "maxDelayMs": 200}},
            resources={"cpu": "500m", "memory": "1Gi"},
            scheduling=LOCAL_NODE,
        ), ns)  # fmt: skip
        pod = wait_for(lambda: ready_pods(kube, ns), 240, "the first runtime pod Ready")[0]
        wait_for(lambda: condition(kget(c, "md", "cnn", ns), "ScalingActive").get("status")
                 == "True", 30, "the autoscaler reading concurrency")  # fmt: skip
        assert replicas(kget(c, "md", "cnn", ns)) == 1  # idle: one replica

        body = tmp_path / "body.json"
        body.write_text(json.dumps({"inputs": [{"name": "input__0", "datatype": "FP32",
                                                "shape": [1, 3, 32, 32], "data": [0.5] * 3072}]}))  # fmt: skip
        url = f"http://{pod.status.podIP}:8080/v2/models/cnn/infer"
        load = subprocess.Popen(
            [sys.executable, "-m", "berth_bench.loadgen", url, "--body-file", str(body),
             "--header", "content-type: application/json", "-c", "16", "-d", "300", "-w", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            # the step starts when the runtime itself serves the load (its own gauge), not
            # when the load process was spawned (its start-up takes seconds on 2 busy cores)
            wait_for(lambda: inflight(pod.status.podIP) >= 2 * 4, 60,
                     "the load reaching the runtime (berth_inflight_requests)")  # fmt: skip
            step = time.monotonic()
            wait_for(lambda: replicas(kget(c, "md", "cnn", ns)) > 1, 30, "a scale-up")
            took = time.monotonic() - step
            print(f"\nload step -> /scale write: {took:.1f} s")
            # the panic window, one tick, one scrape interval, and 2 s for query and writes
            assert took <= WINDOWS["panicSeconds"] + TICK + SCRAPE + 2, took
            up = kget(c, "md", "cnn", ns)
            assert up["status"]["autoscaling"]["metric"] == "concurrency"
            wait_for(lambda: events(c, ns, "cnn", "ScaledUp"), 10, "a ScaledUp Event")
            wait_for(lambda: len(ready_pods(kube, ns)) >= 2, 180, "a second ready replica")
            peak = replicas(kget(c, "md", "cnn", ns))
            assert 2 <= peak <= 4
        finally:
            load.terminate()
            load.wait(timeout=10)
        stop = time.monotonic()
        wait_for(lambda: replicas(kget(c, "md", "cnn", ns)) == 1, 90, "back to 1 replica")
        down = time.monotonic() - stop
        print(f"load stopped -> back to 1 replica: {down:.1f} s")
        # not before the scale-down delay; within panic exit + stable window + delay + slack
        assert DELAY <= down <= 2 * WINDOWS["stableSeconds"] + DELAY + 15, down
        assert events(c, ns, "cnn", "ScaledDown")
    finally:
        c.kubectl("delete", "md", "cnn", "-n", ns, "--wait=false", check=False)
        c.kubectl("delete", "scalingpolicy", pname, "--ignore-not-found", check=False)
        kube.delete(PersistentVolume, f"berth-as-{ns}")
