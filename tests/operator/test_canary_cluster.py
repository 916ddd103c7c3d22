"""The canary against the real API server and the operator (pods on the KWOK nodes).

- The schema refuses a bad spec.canary with the field path.
- Adding a canary creates <name>-canary Deployment and Service and leaves the stable
  children untouched (same generation, same selectors); status shows both versions and
  the split; /scale's selector counts the stable pods only.
- Promotion with one kubectl JSON patch is accepted, moves the model and deletes the
  canary's objects; a rollback (remove spec.canary) deletes them too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from operator_helpers import apply, condition, events, get, model, wait_for

pytestmark = pytest.mark.integration

NEW = {"uri": "file:///models/new.pt", "format": "torchscript"}
PROMOTE = json.dumps([
    {"op": "copy", "from": "/spec/canary/model", "path": "/spec/model"},
    {"op": "remove", "path": "/spec/canary"},
])  # fmt: skip


@pytest.mark.parametrize(
    ("canary", "field", "says"),
    [
        ({"model": NEW, "weight": 101}, "spec.canary.weight", "100"),
        ({"model": NEW, "weight": -1}, "spec.canary.weight", "0"),
        ({"model": NEW}, "spec.canary.weight", "Required"),
        ({"weight": 10}, "spec.canary.model", "Required"),
        ({"model": {"uri": "ftp://x/y.pt", "format": "torchscript"}, "weight": 10},
         "spec.canary.model.uri", "must start with"),
        ({"model": {"uri": "file:///m.pt", "format": "onnx"}, "weight": 10},
         "spec.canary.model.format", "Unsupported value"),
        ({"model": {**NEW, "name": "other"}, "weight": 10},
         "spec.canary.model.name", "must equal model.name"),
        ({"model": NEW, "weight": 10, "replicas": -1}, "spec.canary.replicas", "0"),
    ],
)  # fmt: skip
def test_schema_refuses_a_bad_canary_with_its_field_path(
    cluster: Any, namespace: str, crds: None, canary: dict[str, Any], field: str, says: str
) -> None:
    proc = cluster.kubectl("apply", "-n", namespace, "-f", "-", check=False,
                           input=yaml.safe_dump(model("bad", canary=canary)))  # fmt: skip
    assert proc.returncode != 0, f"accepted: {canary}"
    assert field in proc.stderr and says in proc.stderr, proc.stderr


def test_same_served_name_set_on_both_is_accepted(cluster: Any, namespace: str, crds: None) -> None:
    m = model("named", canary={"model": {**NEW, "name": "svc"}, "weight": 10})
    m["spec"]["model"]["name"] = "svc"
    apply(cluster, m, namespace)
    got = get(cluster, "md", "named", namespace)
    assert got["spec"]["canary"]["replicas"] == 1  # the default


def _stable(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    dep = get(cluster, "deployment", name, ns)
    svc = get(cluster, "service", name, ns)
    pdb = get(cluster, "pdb", name, ns)
    return {
        "uid": dep["metadata"]["uid"],
        "generation": dep["metadata"]["generation"],
        "selector": dep["spec"]["selector"],
        "template": dep["spec"]["template"],
        "service": svc["spec"]["selector"],
        "pdb": pdb["spec"]["selector"],
    }


def _status(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    return dict((get(cluster, "md", name, ns) or {}).get("status") or {})


def test_canary_lifecycle_promote_and_rollback(cluster: Any, namespace: str, operator: Any) -> None:
    ns = namespace
    apply(cluster, model("cm", replicas=2), ns)
    wait_for(lambda: _status(cluster, ns, "cm").get("readyReplicas") == 2, 90,
             what="2 stable replicas ready")  # fmt: skip
    before = _stable(cluster, ns, "cm")

    # a canary at 10%
    cluster.kubectl("patch", "md", "cm", "-n", ns, "--type=merge", "-p",
                    json.dumps({"spec": {"canary": {"model": NEW, "weight": 10}}}))  # fmt: skip
    dep = wait_for(
        lambda: get(cluster, "deployment", "cm-canary", ns), 30, what="canary Deployment"
    )
    svc = wait_for(lambda: get(cluster, "service", "cm-canary", ns), 30, what="canary Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert dep["metadata"]["ownerReferences"][0]["name"] == "cm"
    assert svc["metadata"]["labels"]["serving.berth.dev/track"] == "canary"
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["BERTH_MODEL_URI"] == NEW["uri"]

    def both_ready() -> dict[str, Any] | None:
        st = _status(cluster, ns, "cm")
        ok = (st.get("canary") or {}).get("ready") == "1/1" and st.get("readyReplicas") == 2
        return st if ok else None

    st = wait_for(both_ready, 90, what="canary 1/1 and stable 2 ready")
    assert st["traffic"] == [
        {"track": "stable", "percent": 90, "readyReplicas": 2},
        {"track": "canary", "percent": 10, "readyReplicas": 1},
    ]
    md = get(cluster, "md", "cm", ns)
    wait_for(lambda: condition(get(cluster, "md", "cm", ns), "CanaryReady").get("status") == "True",
             30, what="CanaryReady=True")  # fmt: skip
    # the stable children are untouched: no rollout, the same (immutable) selector
    assert _stable(cluster, ns, "cm") == before
    # /scale's selector (status.selector) counts the stable pods, never the canary's
    scale = json.loads(cluster.kubectl("get", "--raw",
        f"/apis/serving.berth.dev/v1alpha1/namespaces/{ns}/modeldeployments/cm/scale").stdout)  # fmt: skip
    selected = get(cluster, "pods", ns=ns)["items"]
    sel = dict(kv.split("=") for kv in scale["status"]["selector"].split(","))
    chosen = [p for p in selected
              if all(p["metadata"]["labels"].get(k) == v for k, v in sel.items())
              and not p["metadata"].get("deletionTimestamp")]  # fmt: skip
    assert len(chosen) == 2, [p["metadata"]["name"] for p in chosen]
    assert all(not p["metadata"]["name"].startswith("cm-canary") for p in chosen)
    # printer column (-o wide): the canary's effective percent
    wide = cluster.kubectl("get", "md", "cm", "-n", ns, "-o", "wide").stdout
    assert "CANARY" in wide.splitlines()[0] and " 10 " in wide.splitlines()[1], wide

    # promote with plain kubectl: the API server accepts the JSON patch
    cluster.kubectl("patch", "md", "cm", "-n", ns, "--type=json", "-p", PROMOTE)
    md = get(cluster, "md", "cm", ns)
    assert md["spec"]["model"] == {**NEW} and "canary" not in md["spec"]
    wait_for(lambda: get(cluster, "deployment", "cm-canary", ns) is None, 60,
             what="canary Deployment deleted")  # fmt: skip
    wait_for(lambda: get(cluster, "service", "cm-canary", ns) is None, 30, what="Service deleted")
    st = wait_for(lambda: (lambda s: s if "canary" not in s and "traffic" not in s else None)(
        _status(cluster, ns, "cm")), 30, what="status.canary gone")  # fmt: skip
    assert not condition({"status": st}, "CanaryReady")
    dep = get(cluster, "deployment", "cm", ns)
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["BERTH_MODEL_URI"] == NEW["uri"]
    assert dep["metadata"]["uid"] == before["uid"] and dep["spec"]["selector"] == before["selector"]

    # roll back a second canary: remove spec.canary
    other = {"uri": "file:///models/third.pt", "format": "torchscript"}
    cluster.kubectl("patch", "md", "cm", "-n", ns, "--type=merge", "-p",
                    json.dumps({"spec": {"canary": {"model": other, "weight": 50}}}))  # fmt: skip
    wait_for(lambda: get(cluster, "deployment", "cm-canary", ns), 30, what="canary again")
    cluster.kubectl("patch", "md", "cm", "-n", ns, "--type=json", "-p",
                    '[{"op":"remove","path":"/spec/canary"}]')  # fmt: skip
    wait_for(lambda: get(cluster, "deployment", "cm-canary", ns) is None, 60, what="rolled back")
    assert get(cluster, "md", "cm", ns)["spec"]["model"] == NEW
    # Events: one per CanaryReady change (ready, promoting, the second one ready), no loop
    told = [e for e in events(cluster, ns, "cm") if e["message"].startswith("CanaryReady=")]
    told.sort(key=lambda e: e.get("eventTime") or e.get("firstTimestamp") or "")
    reasons = [e["reason"] for e in told]
    assert reasons[:2] == ["Serving", "Promoting"] and reasons[2:] in ([], ["Serving"]), reasons
    assert all(e.get("count", 1) == 1 for e in told), told
