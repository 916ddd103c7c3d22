"""ScalingPolicy objects -> `Policy`, and which policy a model uses (pure).

A model names its policy in `spec.autoscaling.policyRef.name` (the CRD defaults it to
`default`). A policy that exists is used as written; the name `default` that does not
exist means the built-in defaults below; any other name that does not exist is
`PolicyNotFound` and the autoscaler holds the model's replicas.

`hold()` resolves how the gateway holds requests for a model at zero (published in
`status.autoscaling.hold`, which the gateway reads): the model's own deadline
(`spec.autoscaling.holdDeadlineSeconds`, else the annotation HOLD_ANNOTATION) before its
policy's `scaleFromZero`; what neither sets is left out (the gateway's own setting).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from berth_operator.builders import parse_quantity

DEFAULT_NAME = "default"
HOLD_ANNOTATION = "serving.berth.dev/hold-deadline-seconds"  # the gateway reads it too
MAX_HOLD_SECONDS = 3600
BUILTIN = "built-in defaults"


@dataclass(frozen=True)
class Policy:
    """How a metric becomes replicas. Defaults are the built-in policy (see README)."""

    name: str = BUILTIN
    # Seconds of samples averaged for normal decisions (Knative's stable window).
    stable_seconds: float = 60.0
    # Seconds of samples averaged to notice a burst (Knative's panic window).
    panic_seconds: float = 6.0
    # Panic when the panic-window demand reaches this multiple of the ready replicas.
    panic_threshold: float = 2.0
    # A decision multiplies replicas by at most this (ceil(n x rate)).
    max_scale_up_rate: float = 10.0
    # A decision divides replicas by at most this (floor(n / rate)).
    max_scale_down_rate: float = 2.0
    # Seconds a lower recommendation must persist before replicas fall.
    scale_down_delay_seconds: float = 0.0
    # Relative band around the current replicas inside which nothing changes (HPA's 0.1).
    tolerance: float = 0.1
    # Whether an idle model with minReplicas 0 goes to zero replicas.
    idle_to_zero: bool = True
    # Seconds of zero demand before an idle model goes to zero.
    idle_after_seconds: float = 300.0
    # Replicas to keep at least after `fallback_after_ticks` ticks without data (None: off).
    fallback_replicas: int | None = None
    # Consecutive ticks without data before the fallback floor applies.
    fallback_after_ticks: int = 3
    # scaleFromZero: the gateway's hold for a model at zero (None: the gateway's setting).
    hold_deadline_seconds: int | None = None
    max_held_requests: int | None = None
    max_held_bytes: int | None = None


def from_object(obj: Mapping[str, Any]) -> Policy:
    """A ScalingPolicy body (as the API server returns it, defaults filled) -> Policy."""
    spec = obj.get("spec") or {}
    windows = spec.get("windows") or {}
    rates = spec.get("rates") or {}
    idle = spec.get("idleToZero") or {}
    fallback = spec.get("fallback") or {}
    wake = spec.get("scaleFromZero") or {}
    base = Policy()
    return Policy(
        name=str((obj.get("metadata") or {}).get("name") or BUILTIN),
        stable_seconds=float(windows.get("stableSeconds", base.stable_seconds)),
        panic_seconds=float(windows.get("panicSeconds", base.panic_seconds)),
        panic_threshold=float(spec.get("panicThreshold", base.panic_threshold)),
        max_scale_up_rate=float(rates.get("maxScaleUpRate", base.max_scale_up_rate)),
        max_scale_down_rate=float(rates.get("maxScaleDownRate", base.max_scale_down_rate)),
        scale_down_delay_seconds=float(
            rates.get("scaleDownDelaySeconds", base.scale_down_delay_seconds)
        ),
        tolerance=float(spec.get("tolerance", base.tolerance)),
        idle_to_zero=bool(idle.get("enabled", base.idle_to_zero)),
        idle_after_seconds=float(idle.get("afterSeconds", base.idle_after_seconds)),
        fallback_replicas=(
            int(fallback["replicas"]) if fallback.get("replicas") is not None else None
        ),
        fallback_after_ticks=int(fallback.get("afterFailedTicks", base.fallback_after_ticks)),
        hold_deadline_seconds=_int(wake.get("holdDeadlineSeconds")),
        max_held_requests=_int(wake.get("maxHeldRequests")),
        max_held_bytes=_bytes(wake.get("maxHeldBytes")),
    )


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _bytes(value: Any) -> int | None:
    """A quantity ("16Mi", 1048576) -> whole bytes; None when unset or not a quantity
    (the schema refuses those; an object written before the schema had it stays unset)."""
    parsed = parse_quantity(value) if value is not None else None
    return int(parsed) if parsed is not None and parsed > 0 else None


def model_hold_seconds(
    spec: Mapping[str, Any], annotations: Mapping[str, Any]
) -> int | float | None:
    """The model's own hold deadline: spec.autoscaling.holdDeadlineSeconds, else the
    annotation (seconds in (0, 3600]; anything else is ignored, as the gateway does)."""
    raw = (spec.get("autoscaling") or {}).get("holdDeadlineSeconds")
    if raw is None:
        raw = annotations.get(HOLD_ANNOTATION)
    try:
        seconds = float(str(raw)) if raw is not None else None
    except ValueError:
        return None
    if seconds is None or not 0 < seconds <= MAX_HOLD_SECONDS:
        return None
    return int(seconds) if seconds.is_integer() else seconds


def hold(
    spec: Mapping[str, Any], annotations: Mapping[str, Any], policy: Policy | None
) -> dict[str, Any]:
    """status.autoscaling.hold: model > policy; a key left out is the gateway's default."""
    out: dict[str, Any] = {}
    own = model_hold_seconds(spec, annotations)
    if own is not None:
        out.update(deadlineSeconds=own, deadlineFrom="model")
    elif policy is not None and policy.hold_deadline_seconds is not None:
        out.update(deadlineSeconds=policy.hold_deadline_seconds, deadlineFrom="policy")
    if policy is not None and policy.max_held_requests is not None:
        out["maxRequests"] = policy.max_held_requests
    if policy is not None and policy.max_held_bytes is not None:
        out["maxBytes"] = policy.max_held_bytes
    return out


def policy_name(spec: Mapping[str, Any]) -> str:
    """The policy a ModelDeployment spec names (`default` when it names none)."""
    ref = (spec.get("autoscaling") or {}).get("policyRef") or {}
    return str(ref.get("name") or DEFAULT_NAME)


def resolve(name: str, policies: Mapping[str, Policy]) -> Policy | None:
    """The policy to use, or None when a named policy does not exist (PolicyNotFound)."""
    if name in policies:
        return policies[name]
    if name == DEFAULT_NAME:
        return Policy()
    return None
