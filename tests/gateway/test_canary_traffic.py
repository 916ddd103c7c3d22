"""Canary traffic through the dev gateway, with real runtime pods and real load.

Two small CNNs with different weights (seed 0: stable, seed 1: canary) answer the same
request differently, so every response says which version served it.

- Under steady load (30 requests/s for the whole test): a canary at 10%, then 50%, then a
  promotion with one kubectl JSON patch; zero failed requests, the observed split within
  a few points of the weight, and after the promotion every answer from the new model.
- A canary whose model cannot be loaded (a bad URI) fails no request: the stable version
  serves all of them, status.traffic says 100/0, and CanaryReady=False says why (one Event).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_helpers import (
    CNN_BODY,
    SteadyLoad,
    apply,
    cnn_claim,
    kget,
    metric,
    model,
    ready_pods,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RPS = 30.0
PROMOTE = json.dumps([
    {"op": "copy", "from": "/spec/canary/model", "path": "/spec/model"},
    {"op": "remove", "path": "/spec/canary"},
])  # fmt: skip
V1 = {"uri": "pvc://models/small-cnn", "format": "torchscript"}
V2 = {"uri": "pvc://models/small-cnn-v2", "format": "torchscript"}


def write_v2(cluster: Any, ns: str) -> tuple[float, float]:
    """The second CNN (seed 1) beside the first; returns both models' first output value
    for CNN_BODY, computed here with torch (the fingerprints of the two versions)."""
    import torch

    models = Path(cluster.paths.root) / "pvc" / ns / "models"
    target = models / "small-cnn-v2"
    target.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(32, 10),
    ).eval()  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(net).save(str(target / "model.pt"))  # type: ignore[no-untyped-call]
    (target / "berth.json").write_text((models / "small-cnn" / "berth.json").read_text())
    x = torch.full((1, 3, 32, 32), 0.5)
    out = []
    for path in (models / "small-cnn" / "model.pt", target / "model.pt"):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            out.append(float(torch.jit.load(str(path))(x)[0, 0]))  # type: ignore[no-untyped-call]
    return out[0], out[1]


class VersionedLoad(SteadyLoad):
    """SteadyLoad that also records which version answered (by the first output value)."""

    def __init__(self, url: str, fingerprints: dict[str, float]) -> None:
        super().__init__(url, CNN_BODY, rps=RPS)
        self.fingerprints = fingerprints
        self.versions: list[tuple[float, str]] = []

    def answered(self, t: float, r: httpx.Response) -> None:
        if r.status_code == 200:
            value = float(r.json()["outputs"][0]["data"][0])
            version = next((v for v, f in self.fingerprints.items() if abs(value - f) < 1e-3), "?")
            self.versions.append((t, version))

    def share(self, start: float, end: float) -> tuple[float, int]:
        """(percent answered by v2, requests) among those sent in [start, end)."""
        window = [v for t, v in self.versions if start <= t < end]
        return 100.0 * sum(v == "v2" for v in window) / max(1, len(window)), len(window)


def status(c: Any, ns: str, name: str) -> dict[str, Any]:
    return dict((kget(c, "md", name, ns) or {}).get("status") or {})


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((x for x in st.get("conditions") or [] if x["type"] == type_), {})


def test_canary_10_50_promote_under_load_fails_nothing(
    gateway_stack: Any, gateway_url: str, namespace: str
) -> None:
    from lightkube.resources.core_v1 import PersistentVolume

    c, ns = gateway_stack, namespace
    pv = cnn_claim(c, ns)
    v1, v2 = write_v2(c, ns)
    assert abs(v1 - v2) > 1e-2, (v1, v2)
    try:
        apply(c, model("ab", model=V1, canary={"model": V2, "weight": 10}), ns)
        wait_for(lambda: len(ready_pods(c, ns, "ab")) == 1 and len(ready_pods(c, ns, "ab-canary")) == 1,
                 300, "a ready stable pod and a ready canary pod")  # fmt: skip
        wait_for(lambda: [t["percent"] for t in status(c, ns, "ab").get("traffic") or []] == [90, 10],
                 60, "status.traffic 90/10")  # fmt: skip
        url = f"{gateway_url}/ns/{ns}/v2/models/ab/infer"
        with VersionedLoad(url, {"v1": v1, "v2": v2}) as load:
            t10 = time.monotonic() + 1.0  # the gateway has the route: settle a second
            time.sleep(26)
            c.kubectl("patch", "md", "ab", "-n", ns, "--type=merge", "-p",
                      json.dumps({"spec": {"canary": {"weight": 50}}}))  # fmt: skip
            t50 = time.monotonic() + 1.0
            time.sleep(26)
            c.kubectl("patch", "md", "ab", "-n", ns, "--type=json", "-p", PROMOTE)
            t_promote = time.monotonic()

            phases: set[str] = set()

            def promoted() -> bool:
                phases.add(str((status(c, ns, "ab").get("canary") or {}).get("phase")))
                dep = kget(c, "deployment", "ab", ns) or {}
                st = dep.get("status") or {}
                done = (st.get("updatedReplicas") == st.get("replicas") == st.get("readyReplicas") == 1
                        and st.get("observedGeneration") == dep["metadata"]["generation"])  # fmt: skip
                return done and kget(c, "deployment", "ab-canary", ns) is None

            wait_for(promoted, 240, "the stable rollout to the canary's model")
            t_rolled = time.monotonic()
            wait_for(lambda: len(ready_pods(c, ns, "ab")) == 1 and not [
                p for p in ready_pods(c, ns, "ab-canary")], 60, "one pod left")  # fmt: skip
            t_after = time.monotonic() + 3.0  # old endpoints leave the gateway's table
            time.sleep(8)
            t_end = time.monotonic()
        share10, n10 = load.share(t10, t50 - 1.0)
        share50, n50 = load.share(t50, t_promote)
        share_after, n_after = load.share(t_after, t_end)
        # while the stable version rolls out, the canary keeps its 50% (the new model's
        # share only grows as new stable pods replace old ones)
        share_promoting, n_promoting = load.share(t_promote + 1.0, t_rolled - 1.0)
        rollout = t_after - 3.0 - t_promote
        print(
            f"\ncanary under load: {len(load.results)} requests at {load.rate():.1f}/s, "
            f"failures {dict(load.failures())}; observed canary share {share10:.1f}% of {n10} "
            f"at weight 10, {share50:.1f}% of {n50} at weight 50; promotion rolled out in "
            f"{rollout:.0f} s ({share_promoting:.0f}% of {n_promoting} from the new model "
            f"meanwhile), then {share_after:.0f}% of {n_after} from the new model; "
            f"unclassified {sum(v == '?' for _, v in load.versions)}"
        )
        buckets = [load.share(t, t + 5)[0] for t in range(int(t10), int(t_promote) - 5, 5)]
        print("canary share per 5 s:", " ".join(f"{b:.0f}" for b in buckets))
        print(
            "gateway tracks:",
            {
                t: metric(gateway_url, "berth_gateway_track_requests_total", namespace=ns, track=t)
                for t in ("stable", "canary")
            },
        )
        assert load.rate() >= 20, load.rate()
        assert not load.failures(), load.failures()
        assert not [v for _, v in load.versions if v == "?"]
        assert n10 >= 500 and n50 >= 600, (n10, n50)
        assert abs(share10 - 10) <= 4, share10  # 4 standard deviations at n=700
        assert abs(share50 - 50) <= 6, share50  # over 3 standard deviations at n=750
        assert share_after == 100.0 and n_after >= 100, (share_after, n_after)
        assert "Promoting" in phases, phases
        # 4 standard deviations below 50% for the window's size (n was 60 to 900 here): a
        # canary dropped at the promotion would give about 0% until new stable pods serve
        assert n_promoting >= 15, n_promoting
        floor = 50 - 4 * 50 / math.sqrt(n_promoting)
        assert share_promoting >= floor, (share_promoting, n_promoting, floor)
        md = kget(c, "md", "ab", ns)
        assert md["spec"]["model"] == V2 and "canary" not in md["spec"]
        st = status(c, ns, "ab")
        assert "canary" not in st and "traffic" not in st
    finally:
        c.kubectl("delete", "md", "ab", "-n", ns, "--wait=false", check=False)
        c.client().delete(PersistentVolume, pv)


def test_canary_with_a_bad_model_uri_fails_no_request(
    gateway_stack: Any, gateway_url: str, namespace: str
) -> None:
    from lightkube.resources.core_v1 import PersistentVolume

    c, ns = gateway_stack, namespace
    pv = cnn_claim(c, ns)
    bad = {"uri": "pvc://models/no-such-model", "format": "torchscript"}
    v1, v2 = write_v2(c, ns)
    try:
        apply(c, model("bad", model=V1), ns)
        wait_for(lambda: len(ready_pods(c, ns, "bad")) == 1, 300, "a ready stable pod")
        url = f"{gateway_url}/ns/{ns}/v2/models/bad/infer"
        with VersionedLoad(url, {"v1": v1, "v2": v2}) as load:
            time.sleep(2)
            c.kubectl("patch", "md", "bad", "-n", ns, "--type=merge", "-p",
                      json.dumps({"spec": {"canary": {"model": bad, "weight": 50}}}))  # fmt: skip

            def why() -> dict[str, Any]:
                cond = condition(status(c, ns, "bad"), "CanaryReady")
                return cond if cond.get("reason") == "ModelLoadFailed" else {}

            t0 = time.monotonic()
            cond = wait_for(why, 120, "CanaryReady=False, reason ModelLoadFailed")
            took = time.monotonic() - t0

            def restarted_twice() -> bool:
                pods = json.loads(c.kubectl("get", "pods", "-n", ns, "-l",
                    "app.kubernetes.io/instance=bad-canary", "-o", "json").stdout)["items"]  # fmt: skip
                return any(cs.get("restartCount", 0) >= 2 for p in pods
                           for cs in (p.get("status") or {}).get("containerStatuses") or [])  # fmt: skip

            wait_for(restarted_twice, 120, "the canary crash-looping (2 restarts)")
            time.sleep(2)
        st = status(c, ns, "bad")
        print(
            f"\nbad canary: {len(load.results)} requests at {load.rate():.1f}/s, failures "
            f"{dict(load.failures())}; CanaryReady said why after {took:.0f} s: {cond['message']}"
        )
        assert not load.failures(), load.failures()
        assert load.rate() >= 20, load.rate()
        assert {v for _, v in load.versions} == {"v1"}  # the stable version served them all
        assert cond["status"] == "False"
        assert "pvc://models/no-such-model" in cond["message"], cond
        assert "exit code" in cond["message"], cond
        assert st["traffic"] == [
            {"track": "stable", "percent": 100, "readyReplicas": 1},
            {"track": "canary", "percent": 0, "readyReplicas": 0},
        ]
        assert condition(st, "Ready")["status"] == "True"  # the stable version is fine
        assert condition(st, "Degraded")["status"] == "False"
        items = json.loads(c.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
        told = [e for e in items if (e.get("involvedObject") or {}).get("name") == "bad"
                and e["message"].startswith("CanaryReady=False") and e["reason"] == "ModelLoadFailed"]  # fmt: skip
        assert len(told) == 1 and told[0].get("count", 1) == 1 and told[0]["type"] == "Warning", (
            told
        )
    finally:
        c.kubectl("delete", "md", "bad", "-n", ns, "--wait=false", check=False)
        c.client().delete(PersistentVolume, pv)
