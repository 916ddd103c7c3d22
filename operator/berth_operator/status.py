"""Pure status: observed children -> the ModelDeployment's status and conditions.

Observations are small frozen dataclasses built from API bodies by `observe_*`;
`compute()` turns them into the status dict, and `condition_changes()` lists what
changed between two statuses (each change becomes an Event).

Conditions:
  Ready        True when every desired replica is updated and ready (Serving). A model at
               zero replicas is not Ready (ScaledToZero); with a gateway configured the
               message says the gateway holds the next request and wakes it.
  Progressing  True while the Deployment rolls out (Creating, RollingOut).
  Degraded     True when something needs a human: InvalidSpec, InsufficientGPU,
               Unschedulable, InvalidAuthToken (the runtime refused to start: the token in
               spec.auth's Secret is empty or unusable), ModelLoadFailed, ImagePullFailed,
               ProgressDeadlineExceeded.
  AbleToScale, ScalingActive, ScalingLimited
               the autoscaler's (HPA's names), for models with spec.autoscaling; passed in
               by the reconciler from the autoscaler loop, with status.autoscaling.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from berth_operator import builders
from berth_operator.settings import Settings

CONDITION_TYPES = ("Ready", "Progressing", "Degraded")
CANARY_CONDITION = "CanaryReady"  # only with spec.canary: see add_canary
AUTOSCALER_CONDITIONS = ("AbleToScale", "ScalingActive", "ScalingLimited")
# An autoscaler condition that is news the first time it appears (one Event).
AUTOSCALER_PROBLEMS = {"MetricsUnavailable", "InvalidMetricQuery", "PolicyNotFound",
                       "InsufficientGPU", "FailedUpdateScale"}  # fmt: skip
GPU_SHORTAGE = f"Insufficient {builders.GPU_RESOURCE}"
CRASH_REASONS = {"CrashLoopBackOff": "ModelLoadFailed", "RunContainerError": "ModelLoadFailed"}
PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName"}
# The runtime's own start-up refusal, as it writes it to its termination message
# (runtime/berth_runtime/cli.py: "berth-runtime: start-up refused (<Reason>): <message>").
# Only these reasons become a condition's reason: the pod is the tenant's, so its text
# never chooses the reason.
_REFUSAL = re.compile(r"^berth-runtime: start-up refused \(([A-Za-z]+)\): (.+)$", re.MULTILINE)
REFUSAL_REASONS = frozenset({"InvalidAuthToken"})
_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL|FATAL)\b|Error:|Exception:")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T][0-9:.,]+\s*")


@dataclass(frozen=True)
class DeploymentObs:
    generation: int = 0
    observed_generation: int = 0
    spec_replicas: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    deadline_exceeded: bool = False
    message: str = ""


@dataclass(frozen=True)
class PodObs:
    name: str
    phase: str = "Pending"
    ready: bool = False
    deleting: bool = False
    unschedulable: bool = False
    scheduler_message: str = ""
    waiting_reason: str = ""
    waiting_message: str = ""
    restarts: int = 0  # of the model container (a crash loop keeps counting up)
    last_exit: str = ""  # how it last ended: exit code, reason, termination message
    refused: tuple[str, str] | None = None  # (reason, message): the runtime refused to start


def observe_deployment(body: Mapping[str, Any]) -> DeploymentObs:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    st = body.get("status") or {}
    progressing: dict[str, Any] = next(
        (c for c in st.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    return DeploymentObs(
        generation=int(meta.get("generation") or 0),
        observed_generation=int(st.get("observedGeneration") or 0),
        spec_replicas=int(spec["replicas"]) if spec.get("replicas") is not None else 1,
        replicas=int(st.get("replicas") or 0),
        ready_replicas=int(st.get("readyReplicas") or 0),
        updated_replicas=int(st.get("updatedReplicas") or 0),
        available_replicas=int(st.get("availableReplicas") or 0),
        deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
        message=str(progressing.get("message") or ""),
    )


def observe_pod(body: Mapping[str, Any]) -> PodObs:
    meta = body.get("metadata") or {}
    st = body.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or []}
    scheduled = conds.get("PodScheduled") or {}
    unschedulable = (
        scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
    )
    waiting_reason = waiting_message = ""
    restarts, last_exit = _last_exit(st.get("containerStatuses") or [])
    for cs in st.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in CRASH_REASONS or waiting.get("reason") in PULL_REASONS:
            waiting_reason = str(waiting["reason"])
            waiting_message = str(waiting.get("message") or "")
            break
    return PodObs(
        name=str(meta.get("name", "")),
        phase=str(st.get("phase") or "Pending"),
        ready=(conds.get("Ready") or {}).get("status") == "True",
        deleting=bool(meta.get("deletionTimestamp")),
        unschedulable=unschedulable,
        scheduler_message=str(scheduled.get("message") or "") if unschedulable else "",
        waiting_reason=waiting_reason,
        waiting_message=waiting_message,
        restarts=restarts,
        last_exit=last_exit,
        refused=_refusal(st.get("containerStatuses") or []),
    )


def _refusal(statuses: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) when the runtime container's last run ended in a start-up refusal.

    Read from the current or the last termination, so it stays the same while the pod
    crash-loops (waiting, running a moment, terminated): one condition, one Event.
    """
    for cs in statuses:
        if cs.get("name") != builders.CONTAINER:
            continue
        for state in (cs.get("state") or {}, cs.get("lastState") or {}):
            message = str((state.get("terminated") or {}).get("message") or "")[:4096]
            found = _REFUSAL.search(message)
            if found and found.group(1) in REFUSAL_REASONS:
                return found.group(1), found.group(2).strip()[:600]
    return None


def _last_exit(statuses: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """(restart count, how the container last ended) of the first container that ended."""
    for cs in statuses:
        ended = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get(
            "terminated"
        )
        if not ended:
            continue
        lines = [x.strip() for x in str(ended.get("message") or "").splitlines() if x.strip()]
        # the termination message (or, with FallbackToLogsOnError, the log's end): its last
        # error line says why; the lines after it are the shutdown's
        errors = [x for x in lines if _ERROR_LINE.search(x)]
        tail = _TIMESTAMP.sub("", errors[-1] if errors else " | ".join(lines[-3:]))[-600:]
        what = f"exit code {ended.get('exitCode')}"
        if ended.get("reason"):
            what += f" ({ended['reason']})"
        return int(cs.get("restartCount") or 0), f"{what}: {tail}" if tail else what
    return 0, ""


def _cond(type_: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def _degraded(
    invalid: str | None, dep: DeploymentObs | None, pods: Sequence[PodObs], auth_ref: str = ""
) -> tuple[str, str] | None:
    """(reason, message) when the model needs a human, else None."""
    if invalid:
        return "InvalidSpec", invalid
    live = [p for p in sorted(pods, key=lambda p: p.name) if not p.deleting]
    for pod in live:
        if pod.unschedulable:
            reason = "InsufficientGPU" if GPU_SHORTAGE in pod.scheduler_message else "Unschedulable"
            return reason, pod.scheduler_message
    for pod in live:
        if pod.refused is not None and not pod.ready:
            where = f" ({auth_ref})" if pod.refused[0] == "InvalidAuthToken" and auth_ref else ""
            return pod.refused[0], f"the runtime refused to start{where}: {pod.refused[1]}"
    for pod in live:
        if pod.waiting_reason in CRASH_REASONS:
            msg = pod.waiting_message or f"pod {pod.name}: {pod.waiting_reason}"
            return CRASH_REASONS[pod.waiting_reason], msg
        if pod.waiting_reason in PULL_REASONS:
            return "ImagePullFailed", pod.waiting_message or f"pod {pod.name}: {pod.waiting_reason}"
    if dep is not None and dep.deadline_exceeded:
        return "ProgressDeadlineExceeded", dep.message
    return None


def compute(
    md: Mapping[str, Any],
    dep: DeploymentObs | None,
    pods: Iterable[PodObs],
    settings: Settings,
    *,
    invalid: str | None = None,
    observed_generation: int | None = None,
    previous: Mapping[str, Any] | None = None,
    now: str = "",
    autoscaling: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The status subresource for one ModelDeployment (lastTransitionTime kept when stable)."""
    meta, spec = md["metadata"], md["spec"]
    name, namespace = meta["name"], meta["namespace"]
    generation = int(meta.get("generation") or 0)
    gen = generation if observed_generation is None else observed_generation
    desired = builders.desired_replicas(spec)
    pods = list(pods)
    ready = dep.ready_replicas if dep else 0
    current = dep.replicas if dep else 0
    updated = dep.updated_replicas if dep else 0

    degraded = _degraded(invalid, dep, pods, _auth_ref(spec))
    rolled_out = (
        dep is not None
        and dep.observed_generation >= dep.generation
        and dep.spec_replicas == desired
        and updated >= desired
        and current == updated
    )
    if dep is None:
        progressing = _cond("Progressing", not invalid, "InvalidSpec" if invalid else "Creating",
                            invalid or "creating the Deployment", gen)  # fmt: skip
    elif rolled_out and ready >= desired:
        progressing = _cond("Progressing", False, "RolloutComplete",
                            f"{ready}/{desired} replicas updated and ready", gen)  # fmt: skip
    elif degraded and degraded[0] == "ProgressDeadlineExceeded":
        progressing = _cond("Progressing", False, degraded[0], degraded[1], gen)
    else:
        progressing = _cond("Progressing", True, "RollingOut",
                            f"{updated}/{desired} replicas updated, {ready} ready", gen)  # fmt: skip

    if degraded:
        degraded_c = _cond("Degraded", True, degraded[0], degraded[1], gen)
    else:
        degraded_c = _cond("Degraded", False, "Healthy", "no problem observed", gen)

    if invalid:
        ready_c = _cond("Ready", False, "InvalidSpec", invalid, gen)
    elif desired == 0 and rolled_out:
        # Nothing serves requests right now: not Ready, whoever may wake it.
        ready_c = _cond("Ready", False, "ScaledToZero", _zero_message(spec, settings), gen)
    elif rolled_out and ready >= desired:
        ready_c = _cond("Ready", True, "Serving", f"{ready}/{desired} replicas ready", gen)
    elif degraded:
        ready_c = _cond("Ready", False, degraded[0], degraded[1], gen)
    else:
        reason = "Starting" if ready == 0 else "RollingOut"
        ready_c = _cond("Ready", False, reason, f"{ready}/{desired} replicas ready", gen)

    conditions = [ready_c, progressing, degraded_c]
    scaler = autoscaling if spec.get("autoscaling") else None
    if scaler:
        conditions += [{**c, "observedGeneration": gen} for c in scaler.get("conditions") or []]
    old = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    for cond in conditions:
        before = old.get(cond["type"])
        if before and before.get("status") == cond["status"] and before.get("lastTransitionTime"):
            cond["lastTransitionTime"] = before["lastTransitionTime"]
        else:
            cond["lastTransitionTime"] = now
    out = {
        "observedGeneration": gen,
        "replicas": current,
        "readyReplicas": ready,
        "desiredReplicas": desired,
        "ready": f"{ready}/{desired}",
        "selector": builders.selector_string(name),
        "url": model_url(name, namespace, settings),
        "modelName": builders.served_name(md),
        "auth": auth_mode(spec),
        "conditions": conditions,
    }
    if scaler and scaler.get("status"):
        out["autoscaling"] = dict(scaler["status"])
    return out


def auth_mode(spec: Mapping[str, Any]) -> str:
    """status.auth: Enabled when spec.auth names a token Secret, else Disabled.

    Enabled is fail-closed: the runtime requires the token on every inference route, and
    refuses to start (Degraded, InvalidAuthToken) when the token is empty or unusable.
    """
    ref = (spec.get("auth") or {}).get("secretRef") or {}
    return "Enabled" if ref.get("name") else "Disabled"


def _auth_ref(spec: Mapping[str, Any]) -> str:
    ref = (spec.get("auth") or {}).get("secretRef") or {}
    if not ref.get("name"):
        return ""
    return f"spec.auth.secretRef: Secret {ref['name']}, key {ref.get('key') or 'token'}"


def model_url(name: str, namespace: str, settings: Settings) -> str:
    """The model's address: through the gateway when one is configured, else its Service."""
    if settings.gateway.url:
        return f"{settings.gateway.url.rstrip('/')}/ns/{namespace}"
    return builders.service_url(name, namespace, settings)


def _zero_message(spec: Mapping[str, Any], settings: Settings) -> str:
    why = "scaled to zero by the autoscaler (idle)" if spec.get("autoscaling") else (
        "spec.replicas is 0")  # fmt: skip
    if settings.gateway.url:
        return (
            f"{why}; the gateway ({settings.gateway.url}) holds the next request and scales "
            "the model up"
        )
    if spec.get("autoscaling"):
        return f"{why}; requests fail until it is scaled up again: no gateway is configured"
    return why


def condition_changes(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Conditions whose status or reason differ from before (each one becomes an Event).

    The first status of a new model counts only when it is news: Degraded=True or
    Ready=True (the "Created" Events of its children already say that it started).
    """
    old = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    changed = []
    for cond in current.get("conditions") or []:
        before = old.get(cond["type"])
        if before is None:
            news = cond["type"] in ("Degraded", "Ready") and cond["status"] == "True"
            news = news or (cond["type"] == CANARY_CONDITION and cond["reason"] != "Starting")
            news = news or (
                cond["type"] in AUTOSCALER_CONDITIONS and cond["reason"] in AUTOSCALER_PROBLEMS
            )
            if news:
                changed.append(cond)
        elif (before.get("status"), before.get("reason")) != (cond["status"], cond["reason"]):
            changed.append(cond)
    return changed


def same_status(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    """Equal except for lastTransitionTime (so a no-change recompute writes nothing)."""
    if a is None:
        return False

    def strip(s: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in s.items() if k in b}
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in s.get("conditions") or []
        ]
        return out

    return strip(a) == strip(b)


# --- the canary (spec.canary): status.canary, status.traffic, the CanaryReady condition ---


def _canary_problem(
    md: Mapping[str, Any], dep: DeploymentObs | None, pods: Sequence[PodObs]
) -> tuple[str, str] | None:
    """(reason, message) saying why the canary's pods do not get ready, else None."""
    uri = str(((md["spec"].get("canary") or {}).get("model") or {}).get("uri", ""))
    live = [p for p in sorted(pods, key=lambda p: p.name) if not p.deleting]
    for pod in live:
        if pod.unschedulable:
            reason = "InsufficientGPU" if GPU_SHORTAGE in pod.scheduler_message else "Unschedulable"
            return reason, f"canary pod {pod.name}: {pod.scheduler_message}"
    for pod in live:
        if pod.waiting_reason in PULL_REASONS:
            return (
                "ImagePullFailed",
                f"canary pod {pod.name}: {pod.waiting_message or pod.waiting_reason}",
            )
        # a crash loop alternates waiting and running: the restart count keeps it steady
        if not pod.ready and (pod.restarts > 0 or pod.waiting_reason in CRASH_REASONS):
            how = pod.last_exit or pod.waiting_message or pod.waiting_reason
            return "ModelLoadFailed", (
                f"canary pod {pod.name} cannot serve the canary model {uri} "
                f"({pod.restarts} restarts; {how})"
            )
    if dep is not None and dep.deadline_exceeded:
        return "ProgressDeadlineExceeded", f"canary: {dep.message}"
    return None


def add_canary(
    out: dict[str, Any],
    md: Mapping[str, Any],
    stable: DeploymentObs | None,
    dep: DeploymentObs | None,
    pods: Iterable[PodObs],
    previous: Mapping[str, Any] | None,
    now: str,
    *,
    promoting: bool = False,
) -> None:
    """Add status.canary, status.traffic and the CanaryReady condition to `out` (compute's).

    `promoting`: spec.canary was promoted and the stable version still rolls out to its
    model; the canary keeps the weight it had (status.canary.weight, phase Promoting) and
    the gateway keeps sending it that share until the operator deletes it.
    """
    from berth_operator import canary  # canary imports builders; status stays importable alone

    name = md["metadata"]["name"]
    if promoting:
        last = dict((previous or {}).get("canary") or {})
        spec: Mapping[str, Any] = {
            "model": md["spec"]["model"],
            "weight": int(last.get("weight") or 0),
            "replicas": dep.spec_replicas if dep else 0,
        }
        md = {**md, "spec": {**md["spec"], "canary": spec}}
    spec = md["spec"].get("canary") or {}
    weight, desired = canary.weight(md), canary.replicas(md)
    ready = dep.ready_replicas if dep else 0
    stable_ready = stable.ready_replicas if stable else 0
    stable_pct, canary_pct = canary.effective_split(weight, stable_ready > 0, ready > 0)
    out["canary"] = {
        "replicas": dep.replicas if dep else 0,
        "readyReplicas": ready,
        "desiredReplicas": desired,
        "ready": f"{ready}/{desired}",
        "weight": weight,
        "uri": str((spec.get("model") or {}).get("uri", "")),
        "service": canary.name_of(name),
        "phase": canary.PROMOTING if promoting else "Canary",
    }
    out["traffic"] = [
        {"track": canary.STABLE, "percent": stable_pct, "readyReplicas": stable_ready},
        {"track": canary.CANARY, "percent": canary_pct, "readyReplicas": ready},
    ]
    gen = int(out.get("observedGeneration") or 0)
    rolled_out = (
        dep is not None
        and dep.observed_generation >= dep.generation
        and dep.updated_replicas >= desired
        and dep.replicas == dep.updated_replicas
    )
    problem = _canary_problem(md, dep, list(pods))
    split = f"it gets {canary_pct}% of requests (weight {weight})"
    if promoting:
        cond = _cond(
            CANARY_CONDITION, ready > 0, canary.PROMOTING,
            f"promoted: spec.model is the canary's model; the canary ({ready}/{desired} ready) "
            f"keeps {canary_pct}% of requests until the stable version has rolled out to it, "
            "then it is deleted", gen,
        )  # fmt: skip
    elif desired == 0:
        cond = _cond(
            CANARY_CONDITION, False, "ScaledToZero", f"spec.canary.replicas is 0; {split}", gen
        )
    elif rolled_out and ready >= desired:
        cond = _cond(
            CANARY_CONDITION,
            True,
            "Serving",
            f"{ready}/{desired} canary replicas ready; {split}",
            gen,
        )
    elif problem:
        cond = _cond(CANARY_CONDITION, False, problem[0], f"{problem[1]}; {split}", gen)
    else:
        cond = _cond(
            CANARY_CONDITION,
            False,
            "Starting",
            f"{ready}/{desired} canary replicas ready; {split}",
            gen,
        )
    before = next(
        (c for c in (previous or {}).get("conditions") or [] if c.get("type") == CANARY_CONDITION),
        None,
    )
    same = before and before.get("status") == cond["status"] and before.get("lastTransitionTime")
    cond["lastTransitionTime"] = before["lastTransitionTime"] if same and before else now
    out["conditions"] = [*out["conditions"], cond]
