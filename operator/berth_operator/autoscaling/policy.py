"""ScalingPolicy objects -> `Policy`, and which policy a model uses (pure).

A model names its policy in `spec.autoscaling.policyRef.name` (the CRD defaults it to
`default`). A policy that exists is used as written; the name `default` that does not
exist means the built-in defaults below; any other name that does not exist is
`PolicyNotFound` and the autoscaler holds the model's replicas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_NAME = "default"
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


def from_object(obj: Mapping[str, Any]) -> Policy:
    """A ScalingPolicy body (as the API server returns it, defaults filled) -> Policy."""
    spec = obj.get("spec") or {}
    windows = spec.get("windows") or {}
    rates = spec.get("rates") or {}
    idle = spec.get("idleToZero") or {}
    fallback = spec.get("fallback") or {}
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
    )


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
