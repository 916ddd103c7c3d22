"""Thin Kopf handlers: unpack, call the reconciler, translate errors.

Watched: ModelDeployments (create/update/resume), and the children the operator owns
(Deployments, Services, NetworkPolicies, PodDisruptionBudgets, PodMonitors, Pods),
filtered by label.
Indexes keep the latest of each in memory, so status needs no polling.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import kopf

from berth_operator import builders, canary, status
from berth_operator.autoscaling.loop import Autoscaler
from berth_operator.errors import ApplyError, ForeignObject, RenderError
from berth_operator.kube import Kube, is_established
from berth_operator.reconciler import Reconciler, plain_child, plain_md
from berth_operator.settings import Settings, from_env

G, V, P = builders.GROUP, builders.VERSION, builders.PLURAL
MANAGED = {"app.kubernetes.io/managed-by": builders.MANAGED_BY}
PODMONITOR_CRD = "podmonitors.monitoring.coreos.com"

# One reconciler per process; main() may replace its settings before kopf starts.
RECONCILER = Reconciler(from_env())
AUTOSCALER: dict[str, Any] = {}  # "loop": the Autoscaler, "task": its asyncio task


def configure(settings: Settings) -> None:
    RECONCILER.settings = settings


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=G)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=G, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{G}/finalizer"
    # Only warnings and errors of Kopf itself become Events; ours are explicit.
    settings.posting.level = logging.WARNING
    settings.posting.default_backoffs = (1, 2, 4)
    settings.watching.server_timeout = 300
    # React to a new object after 20 ms instead of Kopf's 100 ms batching window.
    settings.batching.batch_window = RECONCILER.settings.reconcile.batch_window
    # Release an idle object's worker (and what it holds) after 1 s, not 5 s.
    settings.batching.idle_timeout = 1.0
    if RECONCILER.settings.reconcile.max_workers:
        settings.batching.worker_limit = RECONCILER.settings.reconcile.max_workers
    kube = RECONCILER.settings.kube
    RECONCILER.kube = Kube(
        kube.field_manager, timeout=kube.request_timeout, max_in_flight=kube.max_in_flight
    )
    RECONCILER.podmonitors = await RECONCILER.kube.crd_established(PODMONITOR_CRD)


def start_autoscaler() -> None:
    """Start the autoscaler loop once, from a resource handler: Kopf's Event posting
    (kopf.event) only works in tasks started from a resource handler's context."""
    if "task" in AUTOSCALER or not RECONCILER.settings.autoscaling.enabled:
        return
    scaler = Autoscaler(RECONCILER, RECONCILER.settings.autoscaling)
    AUTOSCALER["loop"] = scaler
    AUTOSCALER["task"] = asyncio.create_task(scaler.run(), name="berth-autoscaler")


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    task = AUTOSCALER.pop("task", None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await AUTOSCALER.pop("loop").close()
    await RECONCILER.startups.close()
    if RECONCILER.kube is not None:
        await RECONCILER.kube.close()


# --- indexes (in-memory views filled by watch streams) --------------------------
# async on purpose: Kopf runs sync handlers in a thread pool, which costs a thread hop
# per watch event (thousands at scale) and grows memory with per-thread malloc arenas.


@kopf.index(G, V, P)
async def model_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    return {(str(namespace), name): plain_md(body)}


@kopf.index(G, V, "scalingpolicies")
async def policy_index(body: kopf.Body, name: str, **_: Any) -> Any:
    return {name: {"metadata": {"name": name}, "spec": copy.deepcopy(dict(body.get("spec") or {}))}}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def deployment_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    return {(str(namespace), name): plain_child(body)}


@kopf.index("v1", "services", labels=MANAGED)
async def service_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    return {(str(namespace), name): plain_child(body)}


@kopf.index("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED)
async def networkpolicy_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    return {(str(namespace), name): plain_child(body)}


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
async def poddisruptionbudget_index(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> Any:
    return {(str(namespace), name): plain_child(body)}


@kopf.index("monitoring.coreos.com", "v1", "podmonitors", labels=MANAGED)
async def podmonitor_index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    return {(str(namespace), name): plain_child(body)}


@kopf.index("v1", "pods", labels={builders.MODEL_LABEL: kopf.PRESENT})
async def pod_index(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
    key: tuple[str, ...] = (str(namespace), labels[builders.MODEL_LABEL])
    if labels.get(canary.TRACK_LABEL) == canary.CANARY:
        key = (*key, canary.CANARY)  # the canary's pods apart: the stable status ignores them
    return {key: status.observe_pod(body)}


# --- the ModelDeployment ---------------------------------------------------------


@kopf.on.resume(G, V, P)
@kopf.on.create(G, V, P)
@kopf.on.update(G, V, P, field="spec")
async def reconcile(body: kopf.Body, reason: str, **kwargs: Any) -> None:
    RECONCILER.bind(kwargs)
    try:
        await RECONCILER.converge(plain_md(body), cause=str(getattr(reason, "value", reason)))
    except ForeignObject as exc:  # not the spec's fault: look again later, quietly
        raise kopf.TemporaryError(
            str(exc), delay=RECONCILER.settings.reconcile.foreign_retry_seconds
        ) from exc
    except RenderError as exc:
        raise kopf.PermanentError(f"cannot render children: {exc}") from exc
    except ApplyError as exc:
        raise kopf.TemporaryError(str(exc), delay=5) from exc


@kopf.on.event(G, V, P)
async def model_event(type: str, namespace: str | None, name: str, **kwargs: Any) -> None:
    RECONCILER.bind(kwargs)
    start_autoscaler()
    if type == "DELETED":
        RECONCILER.forget((str(namespace), name))
    else:  # a wake-up from zero starts the clock of status.startup
        body = kwargs["body"]
        try:
            desired = builders.desired_replicas(body.get("spec") or {})
        except (TypeError, ValueError):
            return  # a spec the schema should have refused: converge reports it
        has_startup = bool((body.get("status") or {}).get("startup"))
        RECONCILER.startups.model_event((str(namespace), name), desired, has_startup)


# --- children -------------------------------------------------------------------


async def _child(kind: str, event: kopf.RawEvent, body: kopf.Body, kwargs: Any) -> None:
    RECONCILER.bind(kwargs)
    await RECONCILER.on_child_event(kind, event.get("type"), body)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_event(event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
    await _child("Deployment", event, body, kwargs)


@kopf.on.event("v1", "services", labels=MANAGED)
async def service_event(event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
    await _child("Service", event, body, kwargs)


@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED)
async def networkpolicy_event(event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
    await _child("NetworkPolicy", event, body, kwargs)


@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
async def pdb_event(event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
    await _child("PodDisruptionBudget", event, body, kwargs)


@kopf.on.event("monitoring.coreos.com", "v1", "podmonitors", labels=MANAGED)
async def podmonitor_event(event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
    await _child("PodMonitor", event, body, kwargs)


@kopf.on.event("v1", "pods", labels={builders.MODEL_LABEL: kopf.PRESENT})
async def pod_event(
    type: str, body: kopf.Body, namespace: str | None, labels: kopf.Labels, **kwargs: Any
) -> None:
    RECONCILER.bind(kwargs)
    key = (str(namespace), labels[builders.MODEL_LABEL])
    if labels.get(canary.TRACK_LABEL) != canary.CANARY:  # status.startup: the stable pods'
        RECONCILER.startups.pod_event(key, body, type == "DELETED")
    RECONCILER.schedule_status(key)


@kopf.on.event(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions",
    field="metadata.name", value=PODMONITOR_CRD,
)  # fmt: skip
async def podmonitor_crd(event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
    RECONCILER.bind(kwargs)
    available = event.get("type") != "DELETED" and is_established(body)
    if available and not RECONCILER.podmonitors:
        RECONCILER.podmonitors = True
        RECONCILER.spawn(RECONCILER.reconcile_all(cause="podmonitor-crd"))
    elif not available:
        RECONCILER.podmonitors = False


@kopf.on.event("v1", "namespaces")
async def namespace_event(type: str, name: str, status: kopf.Status, **_: Any) -> None:
    # No writes (nor Events) into namespaces being deleted.
    RECONCILER.namespace_changed(name, status.get("phase"), type == "DELETED")
