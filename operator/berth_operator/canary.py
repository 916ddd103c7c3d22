"""The canary: a second version of a model beside the stable one (pure).

`spec.canary: {model: {...same fields as spec.model...}, weight: 0..100, replicas: 1}`
renders two more children, both named `<name>-canary` and owned by the ModelDeployment:

  Deployment  the same pod as the stable one (security, probes, preStop, resources,
              scheduling, auth) with the canary's model and `spec.canary.replicas`
  Service     selecting the canary's pods only; the gateway finds its EndpointSlices by
              the labels `serving.berth.dev/model=<name>` and `serving.berth.dev/track=canary`

Selectors: the stable Deployment, Service, PodDisruptionBudget, PodMonitor and
`status.selector` select `app.kubernetes.io/name=berth-runtime,
app.kubernetes.io/instance=<name>`, unchanged since before canaries existed (a
Deployment's selector is immutable, and /scale and the autoscaler count the stable pods
with it). Canary pods carry `app.kubernetes.io/instance=<name>-canary`, so none of those
selects them; their own selector adds `serving.berth.dev/track=canary`. The NetworkPolicy
selects by `serving.berth.dev/model=<name>`, which both versions carry.

The effective split (`status.traffic`, and the gateway's choice, in routing.py) is the
configured weights with a version that has no ready endpoint counted 0.

Promotion (spec.canary.model copied to spec.model, spec.canary removed) drops nothing
and keeps the new model's share, as Argo Rollouts does: while the stable Deployment rolls
out to the canary's model, the canary's objects stay (`promoting()`), status.canary says
phase Promoting with the last weight, and the gateway keeps sending the canary that share;
once the stable rollout is complete the canary's objects are deleted. A rollback (spec.canary
removed, spec.model unchanged) deletes them at once.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from berth_operator import builders
from berth_operator.errors import RenderError
from berth_operator.settings import Settings

TRACK_LABEL = f"{builders.GROUP}/track"
CANARY = "canary"
STABLE = "stable"
SUFFIX = "-canary"
INSTANCE = "app.kubernetes.io/instance"
MODEL_ANNOTATION = f"{builders.GROUP}/canary-model"  # digest of the canary's spec.model
PROMOTING = "Promoting"

Manifest = dict[str, Any]


def spec_of(md: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """spec.canary, or None when the model has none."""
    canary = (md.get("spec") or {}).get("canary")
    return canary if isinstance(canary, Mapping) and canary.get("model") else None


def name_of(name: str) -> str:
    """The canary's Deployment and Service name."""
    return f"{name}{SUFFIX}"


def selector_labels(name: str) -> dict[str, str]:
    """The canary Deployment's and Service's selector: disjoint from the stable one's."""
    return {**builders.selector_labels(name), INSTANCE: name_of(name), TRACK_LABEL: CANARY}


def pod_labels(name: str) -> dict[str, str]:
    """Labels of the canary's pods and objects (serving.berth.dev/model stays <name>)."""
    return {**builders.common_labels(name), INSTANCE: name_of(name), TRACK_LABEL: CANARY}


def weight(md: Mapping[str, Any]) -> int:
    canary = spec_of(md)
    return int(canary.get("weight", 0)) if canary else 0


def replicas(md: Mapping[str, Any]) -> int:
    canary = spec_of(md)
    return int(canary.get("replicas", 1)) if canary else 0


def as_model(md: Mapping[str, Any]) -> dict[str, Any]:
    """The ModelDeployment as the canary sees it: spec.model replaced by the canary's,
    its own replica count, no autoscaling (the autoscaler scales the stable version)."""
    canary = spec_of(md)
    assert canary is not None
    spec = {
        k: copy.deepcopy(v) for k, v in md["spec"].items() if k not in ("canary", "autoscaling")
    }
    spec["model"] = copy.deepcopy(dict(canary["model"]))
    spec["replicas"] = int(canary.get("replicas", 1))
    return {**md, "spec": spec}


def _relabel(manifest: Manifest, name: str) -> None:
    meta = manifest["metadata"]
    meta["name"] = name_of(name)
    meta["labels"] = pod_labels(name)


def deployment(md: Mapping[str, Any], settings: Settings) -> Manifest:
    """The canary's Deployment: the stable pod template with the canary's model."""
    name = md["metadata"]["name"]
    try:
        dep = builders.deployment(as_model(md), settings)
    except RenderError as exc:
        field = exc.field
        if field.startswith("spec.model"):
            field = "spec.canary" + field[len("spec") :]
        raise RenderError(field, exc.message) from None
    _relabel(dep, name)
    spec = dep["spec"]
    spec["selector"] = {"matchLabels": selector_labels(name)}
    template = spec["template"]
    template["metadata"]["labels"] = pod_labels(name)
    # A canary that cannot load its model says why in its pod's status (the log's end
    # becomes the termination message): the CanaryReady condition quotes it.
    for container in template["spec"]["containers"]:
        container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    dep["metadata"]["annotations"] = {MODEL_ANNOTATION: model_digest(as_model(md)["spec"]["model"])}
    return dep


def model_digest(model: Mapping[str, Any]) -> str:
    return builders.spec_hash(dict(model))


def service(md: Mapping[str, Any], settings: Settings) -> Manifest:
    name = md["metadata"]["name"]
    svc = builders.service(md, settings)
    _relabel(svc, name)
    svc["spec"]["selector"] = selector_labels(name)
    return svc


def render(
    md: Mapping[str, Any], settings: Settings, children: builders.Children, *, keep: bool = False
) -> None:
    """Add the canary's children to `children`, or mark them absent without spec.canary
    (`keep`: a promotion is under way, leave them as they are: see promoting())."""
    name = md["metadata"]["name"]
    if keep:
        return
    if spec_of(md) is not None:
        children.apply.append(builders.with_hash(deployment(md, settings)))
        children.apply.append(builders.with_hash(service(md, settings)))
    else:
        children.absent.append(("apps/v1", "Deployment", name_of(name)))
        children.absent.append(("v1", "Service", name_of(name)))


def effective_split(weight: int, stable_ready: bool, canary_ready: bool) -> tuple[int, int]:
    """(stable percent, canary percent) now: a version without a ready endpoint counts 0.

    Both without one: (0, 0) (requests wait for a ready endpoint at the gateway).
    """
    want_canary = max(0, min(100, weight)) if canary_ready else 0
    want_stable = (100 - max(0, min(100, weight))) if stable_ready else 0
    total = want_stable + want_canary
    if total == 0:
        return 0, 0
    canary_pct = round(100 * want_canary / total)
    return 100 - canary_pct, canary_pct


def rolled_out(observed: Mapping[str, Any] | None, desired: Mapping[str, Any] | None) -> bool:
    """Whether an observed Deployment runs the desired manifest on every replica, ready."""
    if observed is None or desired is None:
        return False
    want = ((desired.get("metadata") or {}).get("annotations") or {}).get(builders.HASH_ANNOTATION)
    have = ((observed.get("metadata") or {}).get("annotations") or {}).get(builders.HASH_ANNOTATION)
    meta, spec, st = (
        observed.get("metadata") or {},
        observed.get("spec") or {},
        observed.get("status") or {},
    )
    replicas = int(spec.get("replicas", 1) or 0)
    return (
        want == have
        and int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and int(st.get("updatedReplicas") or 0) >= replicas
        and int(st.get("replicas") or 0) == int(st.get("updatedReplicas") or 0)
        and int(st.get("readyReplicas") or 0) >= replicas
    )


def promoting(
    md: Mapping[str, Any],
    canary_dep: Mapping[str, Any] | None,
    stable_dep: Mapping[str, Any] | None,
    desired_stable: Mapping[str, Any] | None,
) -> bool:
    """A promotion under way: no spec.canary, the canary Deployment still runs the model that
    spec.model now names, and the stable Deployment has not rolled out to it yet."""
    if spec_of(md) is not None or canary_dep is None:
        return False
    ann = ((canary_dep.get("metadata") or {}).get("annotations") or {}).get(MODEL_ANNOTATION)
    if ann != model_digest(md["spec"]["model"]):
        return False  # a rollback, or another model: the canary goes now
    return not rolled_out(stable_dep, desired_stable)
