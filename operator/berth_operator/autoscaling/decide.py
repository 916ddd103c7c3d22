"""The decision (pure): one reading + spec + policy + observed pods + memory -> replicas.

Nothing here does I/O or reads a clock: `now` is passed in (seconds, monotonic), and the
memory of a model (`State`) goes in and comes out. The formulas are in operator/README.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from berth_operator.autoscaling.metrics import Problem
from berth_operator.autoscaling.policy import Policy

EPS = 1e-9


@dataclass(frozen=True)
class Target:
    """spec.autoscaling of one model."""

    min_replicas: int
    max_replicas: int
    metric: str  # concurrency, rps, ...
    target: float
    kind: str = "total"  # "total" or "average" (see metrics/__init__.py)
    description: str = ""  # unit words for the sentence, e.g. "in-flight requests"


@dataclass(frozen=True)
class Observed:
    """What the cluster looks like now."""

    replicas: int  # spec.replicas: what the scale subresource says now
    ready: int = 0  # ready pods
    starting: int = 0  # pods on their way (scheduled or pending, not ready), GPU-blocked excluded
    gpu_blocked: int = 0  # pods Pending because no node has a free GPU
    gpu_message: str = ""  # the scheduler's message for one of them


@dataclass(frozen=True)
class Reading:
    """This tick's value for the model: a number, a Problem, or nothing (no series)."""

    value: float | None = None
    problem: Problem | None = None
    # requests held, in flight or answered lately at the gateway (None: no gateway series)
    gateway: float | None = None

    @property
    def gateway_active(self) -> bool:
        return self.gateway is not None and self.gateway > 0


@dataclass(frozen=True)
class State:
    """What the autoscaler remembers about one model between ticks."""

    samples: tuple[tuple[float, float], ...] = ()  # (time, total demand), stable window
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, rec), scale-down delay window
    panic_until: float | None = None  # in panic mode until then
    last_active: float | None = None  # last time demand was above zero
    failed_ticks: int = 0  # consecutive ticks without data


@dataclass(frozen=True)
class Condition:
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    replicas: int  # what the scale subresource should say
    mode: str  # "stable" or "panic"
    value: float | None  # the metric per ready replica (average kind: as read)
    reason: str  # one sentence
    active: Condition  # ScalingActive
    limited: Condition  # ScalingLimited
    state: State = field(default_factory=State)

    @property
    def holding(self) -> bool:
        return not self.active.status


def _mean(samples: tuple[tuple[float, float], ...], since: float) -> float | None:
    window = [v for t, v in samples if t > since]
    return sum(window) / len(window) if window else None


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - EPS))


def _within_tolerance(want: float, current: int, tolerance: float) -> bool:
    return current > 0 and abs(want / current - 1.0) <= tolerance


def replicas_text(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"


def _clamp(n: int, target: Target) -> int:
    return max(target.min_replicas, min(target.max_replicas, n))


def _limited_within(target: Target) -> Condition:
    return Condition(
        False,
        "DesiredWithinRange",
        f"the desired count is within [{target.min_replicas}, {target.max_replicas}]",
    )


def hold(target: Target, policy: Policy, obs: Observed, state: State, problem: Problem) -> Decision:
    """No usable data: keep the replicas (never a scale-down); a fallback floor may raise."""
    failed = state.failed_ticks + 1
    replicas = _clamp(obs.replicas, target)
    note = f"{problem.message}; holding {replicas_text(replicas)}"
    floor = policy.fallback_replicas
    if floor is not None and failed >= policy.fallback_after_ticks and floor > replicas:
        replicas = _clamp(floor, target)
        note = (
            f"{problem.message}; {failed} ticks without data: fallback floor {floor} "
            f"-> {replicas_text(replicas)}"
        )
    return Decision(
        replicas=replicas,
        mode="stable",
        value=None,
        reason=note,
        active=Condition(False, problem.reason, problem.message),
        limited=_limited_within(target),
        state=replace(state, failed_ticks=failed),
    )


def wake(target: Target, obs: Observed, state: State, reading: Reading) -> Decision:
    """At zero with requests at the gateway: up to max(1, minReplicas) (the gateway itself
    already asked for that; this keeps the autoscaler from writing zero back)."""
    replicas = _clamp(max(1, target.min_replicas), target)
    demand = f"{reading.gateway:.3g}" if reading.gateway is not None else "some"
    reason = (
        f"requests wait at the gateway ({demand} held, in flight or per second) "
        f"-> {replicas_text(replicas)}, woken from zero"
    )
    return Decision(
        replicas=replicas,
        mode="stable",
        value=None,
        reason=reason,
        active=Condition(True, "GatewayDemand", "requests reach the gateway; scaling from zero"),
        limited=_limited_within(target),
        state=replace(state, failed_ticks=0),
    )


def no_reading(target: Target, obs: Observed) -> Problem:
    """Why a model without a series has none (the loop's empty answer, made specific)."""
    if obs.replicas == 0:
        return Problem(
            "ScaledToZero",
            "no replicas to measure; the gateway wakes the model on its next request "
            "(without a gateway: kubectl scale)",
        )
    if obs.ready == 0:
        return Problem("NoReadyReplicas", f"no ready replica reports {target.metric} yet")
    return Problem("MetricsUnavailable", f"Prometheus has no {target.metric} series for the model")


def decide(
    target: Target,
    policy: Policy,
    obs: Observed,
    reading: Reading,
    state: State,
    now: float,
) -> Decision:
    """The replicas for one model this tick, and why."""
    if reading.gateway_active:
        state = replace(state, last_active=now)  # a request reached the gateway: not idle
    elif obs.replicas > 0 and obs.ready == 0 and obs.starting > 0:
        # no replica can serve yet: the idle clock starts once one can (a model whose load
        # takes longer than idleAfterSeconds must not go back to zero before its first answer)
        state = replace(state, last_active=now)
    if reading.gateway_active and obs.replicas == 0:
        return wake(target, obs, state, reading)
    if reading.problem is not None:
        return hold(target, policy, obs, state, reading.problem)
    if reading.value is None or not math.isfinite(reading.value):
        return hold(target, policy, obs, state, no_reading(target, obs))
    n = obs.replicas
    ready = max(obs.ready, 0)
    total = reading.value * ready if target.kind == "average" else reading.value
    if target.kind == "average" and ready == 0:
        return hold(target, policy, obs, state, no_reading(target, obs))

    # 1. windows: averages of the total demand over the stable and panic windows
    samples = (*(s for s in state.samples if s[0] > now - policy.stable_seconds), (now, total))
    stable_total = _mean(samples, now - policy.stable_seconds) or 0.0
    panic_total = _mean(samples, now - policy.panic_seconds) or 0.0
    stable_want = stable_total / target.target
    panic_want = panic_total / target.target
    last_active = (
        now
        if total > 0 or reading.gateway_active or state.last_active is None
        else state.last_active
    )

    # 2. panic: the panic window's demand reaches panicThreshold x ready replicas
    panic_until = state.panic_until if state.panic_until and state.panic_until > now else None
    if panic_want >= policy.panic_threshold * max(ready, 1) and panic_want > n:
        panic_until = now + policy.stable_seconds
    panic = panic_until is not None

    notes: list[str] = []
    stable_rec = n if _within_tolerance(stable_want, n, policy.tolerance) else _ceil(stable_want)
    if panic:
        panic_rec = n if _within_tolerance(panic_want, n, policy.tolerance) else _ceil(panic_want)
        if obs.starting > 0 and panic_rec > n:
            # startup-aware: no panic replicas on top of replicas that are not ready yet
            panic_rec = n
            notes.append(f"{obs.starting} replicas still starting count as capacity")
        rec = max(n, panic_rec, stable_rec)  # panic never scales down
    else:
        rec = stable_rec
        if _within_tolerance(stable_want, n, policy.tolerance) and _ceil(stable_want) != n:
            notes.append(f"within tolerance {policy.tolerance:g}")

    # 3. zero only for an idle model that may go there
    idle_for = now - last_active
    if rec == 0:
        if reading.gateway_active:
            rec = 1
            notes.append("requests reach the gateway")
        elif (
            target.min_replicas == 0
            and policy.idle_to_zero
            and idle_for >= policy.idle_after_seconds
        ):
            notes.append(f"idle for {idle_for:.0f} s")
        else:
            rec = 1

    # 4. scale-down delay: the highest recommendation of the delay window wins
    recs = (
        *(r for r in state.recommendations if r[0] > now - policy.scale_down_delay_seconds),
        (now, rec),
    )
    if rec < n and policy.scale_down_delay_seconds > 0:
        delayed = min(n, max(r for _, r in recs))
        if delayed > rec:
            notes.append(f"scale-down delayed ({policy.scale_down_delay_seconds:g} s)")
            rec = delayed

    # 5. rates
    # startup-aware: the rate multiplies *ready* replicas (as Knative), never forcing below n
    up_limit = max(n, math.ceil(max(ready, 1) * policy.max_scale_up_rate - EPS))
    down_limit = math.floor(n / policy.max_scale_down_rate + EPS)
    if rec > up_limit:
        rec = up_limit
        notes.append(f"limited by maxScaleUpRate {policy.max_scale_up_rate:g}")
    if rec < down_limit:
        rec = down_limit
        notes.append(f"limited by maxScaleDownRate {policy.max_scale_down_rate:g}")

    # 6. GPUs: no more replicas while some wait for a GPU
    limited = _limited_within(target)
    if obs.gpu_blocked > 0:
        limited = Condition(
            True,
            "InsufficientGPU",
            obs.gpu_message or f"{obs.gpu_blocked} pods wait for a GPU",
        )
        if rec > n:
            rec = n
            notes.append(f"{obs.gpu_blocked} pods wait for a GPU")

    # 7. bounds
    wanted = rec
    rec = _clamp(rec, target)
    if wanted > rec:
        notes.append("capped by maxReplicas")
        if not limited.status:
            limited = Condition(True, "TooManyReplicas", f"capped by maxReplicas {rec}")
    elif wanted < rec:
        notes.append("raised to minReplicas")
        if not limited.status:
            limited = Condition(True, "TooFewReplicas", f"raised to minReplicas {rec}")

    per_replica = (panic_total if panic else stable_total) / max(ready, 1)
    if target.kind == "average":
        per_replica = reading.value
    window = (
        f"panic window {policy.panic_seconds:g} s"
        if panic
        else f"stable window {policy.stable_seconds:g} s"
    )
    side = (
        "over" if per_replica > target.target else "under" if per_replica < target.target else "at"
    )
    sentence = (
        f"{target.metric} {per_replica:.1f} per replica {side} target {target.target:g} "
        f"({window}) -> {replicas_text(rec)}"
    )
    if notes:
        sentence += ", " + ", ".join(notes)
    return Decision(
        replicas=rec,
        mode="panic" if panic else "stable",
        value=per_replica,
        reason=sentence,
        active=Condition(True, "ValidMetricFound", f"{target.metric} read from Prometheus"),
        limited=limited,
        state=State(
            samples=samples,
            recommendations=recs if policy.scale_down_delay_seconds > 0 else (),
            panic_until=panic_until,
            last_active=last_active,
            failed_ticks=0,
        ),
    )
