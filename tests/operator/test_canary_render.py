"""The canary, pure: rendering (children, selectors, labels), the effective split, status."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from berth_operator import builders, canary, status
from berth_operator.errors import RenderError
from berth_operator.settings import Settings

pytestmark = pytest.mark.unit

S = Settings()
STABLE = {"uri": "file:///models/a.pt", "format": "torchscript"}
NEW = {"uri": "file:///models/b.pt", "format": "torchscript"}


def md(**spec: Any) -> dict[str, Any]:
    spec.setdefault("model", dict(STABLE))
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "uid-1", "generation": 2},
        "spec": spec,
    }


def children(m: dict[str, Any]) -> builders.Children:
    out = builders.render(m, S, podmonitor=True)
    canary.render(m, S, out)
    return out


def by_name(c: builders.Children, kind: str, name: str) -> dict[str, Any]:
    return next(x for x in c.apply if x["kind"] == kind and x["metadata"]["name"] == name)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_no_canary_renders_nothing_more_and_marks_its_objects_absent() -> None:
    c = children(md())
    assert {(m["kind"], m["metadata"]["name"]) for m in c.apply} >= {("Deployment", "m")}
    assert all(not m["metadata"]["name"].endswith("-canary") for m in c.apply)
    assert ("apps/v1", "Deployment", "m-canary") in c.absent
    assert ("v1", "Service", "m-canary") in c.absent


def test_the_stable_children_do_not_change_when_a_canary_is_added() -> None:
    """An operator upgrade or a new canary leaves the stable Deployment (immutable selector),
    Service, PDB and PodMonitor byte for byte as they were: no rollout, no selector change."""
    before = children(md(replicas=2))
    after = children(md(replicas=2, canary={"model": NEW, "weight": 10}))
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "PodMonitor", "NetworkPolicy"):
        assert by_name(before, kind, "m") == by_name(after, kind, "m"), kind
    assert by_name(after, "Deployment", "m")["spec"]["selector"]["matchLabels"] == (
        builders.selector_labels("m")
    )


def test_canary_children_and_disjoint_selectors() -> None:
    c = children(md(replicas=3, canary={"model": NEW, "weight": 10, "replicas": 2}))
    dep = by_name(c, "Deployment", "m-canary")
    svc = by_name(c, "Service", "m-canary")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    stable_pod_labels = by_name(c, "Deployment", "m")["spec"]["template"]["metadata"]["labels"]
    # the canary's own selector picks its pods and not the stable ones
    assert matches(dep["spec"]["selector"]["matchLabels"], pod_labels)
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert not matches(dep["spec"]["selector"]["matchLabels"], stable_pod_labels)
    # nothing of the stable version (nor status.selector, used by /scale) selects the canary
    for kind in ("Deployment", "PodDisruptionBudget", "PodMonitor"):
        spec = by_name(c, kind, "m")["spec"]
        assert not matches(spec["selector"]["matchLabels"], pod_labels), kind
    assert not matches(by_name(c, "Service", "m")["spec"]["selector"], pod_labels)
    selector = dict(kv.split("=") for kv in builders.selector_string("m").split(","))
    assert not matches(selector, pod_labels)
    # the NetworkPolicy covers both versions
    policy = by_name(c, "NetworkPolicy", "m")["spec"]["podSelector"]["matchLabels"]
    assert matches(policy, pod_labels) and matches(policy, stable_pod_labels)
    # the gateway finds the canary's slices by these Service labels
    assert svc["metadata"]["labels"][builders.MODEL_LABEL] == "m"
    assert svc["metadata"]["labels"][canary.TRACK_LABEL] == "canary"
    assert dep["spec"]["replicas"] == 2
    assert dep["metadata"]["ownerReferences"][0]["name"] == "m"
    assert builders.HASH_ANNOTATION in dep["metadata"]["annotations"]


def test_canary_pod_is_the_stable_pod_with_the_canary_model() -> None:
    m = md(
        runtime={"batching": {"maxDelayMs": 3}},
        autoscaling={"minReplicas": 1, "maxReplicas": 4},
        canary={"model": NEW, "weight": 10},
    )
    c = children(m)
    stable = by_name(c, "Deployment", "m")["spec"]["template"]["spec"]
    pod = by_name(c, "Deployment", "m-canary")["spec"]["template"]["spec"]
    s_ctr, c_ctr = stable["containers"][0], pod["containers"][0]
    for key in ("securityContext", "startupProbe", "readinessProbe", "livenessProbe",
                "lifecycle", "resources", "ports", "image"):  # fmt: skip
        assert s_ctr[key] == c_ctr[key], key
    assert stable["securityContext"] == pod["securityContext"]
    env = {e["name"]: e.get("value") for e in c_ctr["env"]}
    assert env["BERTH_MODEL_URI"] == "file:///models/b.pt"
    assert env["BERTH_MODEL_NAME"] == "m"  # the same served name
    assert env["BERTH_MAX_DELAY_MS"] == "3"
    assert c_ctr["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert by_name(c, "Deployment", "m-canary")["spec"]["replicas"] == 1  # not autoscaled


def test_a_bad_canary_model_is_refused_with_its_own_field_path() -> None:
    with pytest.raises(RenderError) as err:
        children(md(canary={"model": {"uri": "ftp://x/y", "format": "torchscript"}, "weight": 5}))
    assert err.value.field == "spec.canary.model.uri"


def test_rendering_does_not_change_the_input() -> None:
    m = md(canary={"model": NEW, "weight": 10})
    before = copy.deepcopy(m)
    children(m)
    assert m == before


@pytest.mark.parametrize(
    ("weight", "stable", "canary_ready", "want"),
    [
        (10, True, True, (90, 10)),
        (50, True, True, (50, 50)),
        (10, True, False, (100, 0)),
        (10, False, True, (0, 100)),
        (0, False, True, (0, 0)),
        (10, False, False, (0, 0)),
    ],
)
def test_effective_split(weight: int, stable: bool, canary_ready: bool, want: Any) -> None:
    assert canary.effective_split(weight, stable, canary_ready) == want


# --- status -----------------------------------------------------------------------


def dep(ready: int, replicas: int | None = None) -> status.DeploymentObs:
    n = ready if replicas is None else replicas
    return status.DeploymentObs(generation=1, observed_generation=1, spec_replicas=n,
                                replicas=n, ready_replicas=ready, updated_replicas=n,
                                available_replicas=ready)  # fmt: skip


def with_canary(
    m: dict[str, Any], stable: Any, cdep: Any, pods: list[status.PodObs], previous: Any = None
) -> dict[str, Any]:
    out = status.compute(m, stable, [], S, now="t1")
    status.add_canary(out, m, stable, cdep, pods, previous, "t1")
    return out


def cond(out: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in out["conditions"] if c["type"] == type_)


def test_status_with_both_versions_ready() -> None:
    m = md(canary={"model": NEW, "weight": 10})
    out = with_canary(m, dep(1), dep(1), [])
    assert out["canary"]["ready"] == "1/1" and out["canary"]["weight"] == 10
    assert out["traffic"] == [
        {"track": "stable", "percent": 90, "readyReplicas": 1},
        {"track": "canary", "percent": 10, "readyReplicas": 1},
    ]
    assert cond(out, "CanaryReady")["status"] == "True"
    assert out["selector"] == builders.selector_string("m")  # /scale counts stable pods only


# the end of a runtime's log when its model cannot be loaded (the termination message)
LOG = """INFO:     Application startup complete.
2026-11-29 08:13:59,349 ERROR berth.state: model 'm' failed to load: model path /mnt/models/models/missing does not exist (from 'file:///mnt/models/models/missing')
INFO:     Uvicorn running on http://0.0.0.0:8080 (Press CTRL+C to quit)
INFO:     Shutting down
2026-11-29 08:13:59,458 INFO berth.state: draining: readiness off, finishing accepted requests
INFO:     Finished server process [1]
"""


def test_status_says_why_a_canary_cannot_load_its_model() -> None:
    m = md(canary={"model": {"uri": "pvc://models/missing", "format": "torchscript"}, "weight": 10})
    body = {
        "metadata": {"name": "m-canary-abc"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": [{
                       "restartCount": 2,
                       "state": {"running": {}},
                       "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                                    "message": LOG}},
                   }]},
    }  # fmt: skip
    pod = status.observe_pod(body)
    out = with_canary(m, dep(1), dep(0, 1), [pod])
    c = cond(out, "CanaryReady")
    assert (c["status"], c["reason"]) == ("False", "ModelLoadFailed")
    assert "ERROR berth.state: model 'm' failed to load: model path" in c["message"]
    assert "pvc://models/missing" in c["message"] and "Shutting down" not in c["message"]
    assert "exit code 1" in c["message"] and "2 restarts" in c["message"]
    assert out["traffic"][0]["percent"] == 100 and out["traffic"][1]["percent"] == 0
    # the stable version's own conditions do not see the canary's pods
    assert cond(out, "Ready")["status"] == "True" and cond(out, "Degraded")["status"] == "False"
    # a crash loop between restarts (running again, waiting) keeps the reason: one Event
    running = status.PodObs(name="m-canary-abc", phase="Running", restarts=3,
                            last_exit="exit code 1 (Error)")  # fmt: skip
    again = with_canary(m, dep(1), dep(0, 1), [running], previous=out)
    assert cond(again, "CanaryReady")["reason"] == "ModelLoadFailed"
    assert status.condition_changes(out, again) == []
    assert [x["type"] for x in status.condition_changes(None, out)] == ["Ready", "CanaryReady"]


def test_starting_canary_is_not_news_and_gets_no_traffic() -> None:
    m = md(canary={"model": NEW, "weight": 50})
    out = with_canary(m, dep(2), None, [])
    c = cond(out, "CanaryReady")
    assert (c["status"], c["reason"]) == ("False", "Starting")
    assert "0%" in c["message"]
    assert "CanaryReady" not in [x["type"] for x in status.condition_changes(None, out)]


# --- promotion hand-off --------------------------------------------------------------


def observed(manifest: dict[str, Any], ready: int, updated: int | None = None) -> dict[str, Any]:
    """A Deployment as the API server would show it after applying `manifest`."""
    n = manifest["spec"]["replicas"]
    up = n if updated is None else updated
    return {**manifest, "metadata": {**manifest["metadata"], "generation": 3},
            "status": {"observedGeneration": 3, "replicas": n, "updatedReplicas": up,
                       "readyReplicas": ready}}  # fmt: skip


def test_promotion_keeps_the_canary_until_the_stable_rollout_is_done() -> None:
    with_c = md(canary={"model": NEW, "weight": 50})
    canary_dep = by_name(children(with_c), "Deployment", "m-canary")
    old_stable = by_name(children(md()), "Deployment", "m")
    promoted = md(model=dict(NEW))  # spec.canary.model copied to spec.model, canary removed
    new_stable = by_name(children(promoted), "Deployment", "m")
    # the stable Deployment still runs the old template: promoting, keep the canary
    assert canary.promoting(promoted, canary_dep, observed(old_stable, 1), new_stable)
    # the new template is applied but not everywhere ready yet: still promoting
    assert canary.promoting(promoted, canary_dep, observed(new_stable, 0), new_stable)
    assert canary.promoting(promoted, canary_dep, observed(new_stable, 1, updated=0), new_stable)
    # rolled out: the canary goes
    assert not canary.promoting(promoted, canary_dep, observed(new_stable, 1), new_stable)
    kept = builders.render(promoted, S, podmonitor=False)
    canary.render(promoted, S, kept, keep=True)
    assert not [a for a in kept.absent if a[2] == "m-canary"]
    # a rollback (spec.model unchanged) deletes the canary at once
    assert not canary.promoting(md(), canary_dep, observed(old_stable, 0, updated=0), old_stable)
    # with spec.canary there is nothing to promote
    assert not canary.promoting(with_c, canary_dep, observed(old_stable, 1), old_stable)


def test_status_while_promoting_keeps_the_last_weight() -> None:
    previous = with_canary(md(canary={"model": NEW, "weight": 50}), dep(1), dep(1), [])
    promoted = md(model=dict(NEW))
    out = status.compute(promoted, dep(1), [], S, now="t2")
    status.add_canary(out, promoted, dep(1), dep(1), [], previous, "t2", promoting=True)
    assert out["canary"]["phase"] == "Promoting" and out["canary"]["weight"] == 50
    assert [t["percent"] for t in out["traffic"]] == [50, 50]
    c = cond(out, "CanaryReady")
    assert (c["status"], c["reason"]) == ("True", "Promoting")
