"""The decision, pure: table-driven cases (a why on each row) and properties (hypothesis)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from berth_operator.autoscaling.decide import (
    Decision,
    Observed,
    Reading,
    State,
    Target,
    decide,
)
from berth_operator.autoscaling.metrics import Problem
from berth_operator.autoscaling.policy import Policy
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

T = Target(min_replicas=1, max_replicas=10, metric="concurrency", target=8.0)
P = Policy(name="p")  # stable 60 s, panic 6 s, threshold 2, up x10, down /2, no delay, tol 0.1
NOW = 1000.0


def steady(value: float, seconds: float = 60, step: float = 2) -> State:
    """A state whose windows hold `value` for the last `seconds`."""
    n = int(seconds / step)
    return State(samples=tuple((NOW - seconds + i * step, value) for i in range(1, n)),
                 last_active=NOW - seconds if value == 0 else NOW - step)  # fmt: skip


def run(
    value: float | None,
    replicas: int = 2,
    ready: int | None = None,
    state: State | None = None,
    target: Target = T,
    policy: Policy = P,
    problem: Problem | None = None,
    gateway: float | None = None,
    **obs: int,
) -> Decision:
    observed = Observed(replicas=replicas, ready=replicas if ready is None else ready, **obs)  # type: ignore[arg-type]
    history = steady(value if value is not None else 0) if state is None else state
    return decide(target, policy, observed, Reading(value, problem, gateway), history, NOW)


UNAVAILABLE = Problem("MetricsUnavailable", "Prometheus did not answer within 1.5 s")

# (why, decision, expected replicas, expected mode, expected ScalingActive reason)
CASES = [
    ("steady demand at target keeps replicas",
     run(16), 2, "stable", "ValidMetricFound"),
    ("steady demand of 4 replicas' worth asks for 4 (stable, under the panic threshold x ready)",
     run(24, replicas=2, state=steady(24)), 3, "stable", "ValidMetricFound"),
    ("within the 0.1 tolerance band (17/16 - 1 = 0.06) nothing moves",
     run(17, state=steady(17)), 2, "stable", "ValidMetricFound"),
    ("just outside tolerance (18/16 - 1 = 0.125) moves up",
     run(18, state=steady(18)), 3, "stable", "ValidMetricFound"),
    ("a burst: the panic window (16, 16, 64 -> 32) reaches 2 x ready -> panic, 32 / 8 = 4",
     run(64, state=steady(16, seconds=60)), 4, "panic", "ValidMetricFound"),
    ("panic never scales down even if the panic recommendation is lower",
     run(0, replicas=6, state=replace(steady(0), panic_until=NOW + 30)), 6, "panic",
     "ValidMetricFound"),
    ("no panic replicas on top of starting ones (startup-aware)",
     run(64, replicas=3, ready=1, starting=2, state=steady(16)), 3, "panic", "ValidMetricFound"),
    ("demand gone: scale down, by at most maxScaleDownRate (10 -> 5)",
     run(0, replicas=10, state=replace(steady(0), last_active=NOW - 10)), 5, "stable",
     "ValidMetricFound"),
    ("scale-down delay keeps the highest recommendation of the delay window",
     run(8, replicas=4, policy=replace(P, scale_down_delay_seconds=30),
         state=replace(steady(8), recommendations=((NOW - 10, 4),))), 4, "stable",
     "ValidMetricFound"),
    ("after the delay window the lower recommendation applies",
     run(8, replicas=4, policy=replace(P, scale_down_delay_seconds=30),
         state=replace(steady(8), recommendations=((NOW - 40, 4),))), 2, "stable",
     "ValidMetricFound"),
    ("scale-up limited by maxScaleUpRate (1 x 2)",
     run(80, replicas=1, policy=replace(P, max_scale_up_rate=2), state=steady(80)), 2, "panic",
     "ValidMetricFound"),
    ("capped by maxReplicas",
     run(800, replicas=5, state=steady(800)), 10, "panic", "ValidMetricFound"),
    ("minReplicas 0 but demand seen recently: keep 1",
     run(0, replicas=1, target=replace(T, min_replicas=0),
         state=replace(steady(0), last_active=NOW - 100)), 1, "stable", "ValidMetricFound"),
    ("minReplicas 0, idle for afterSeconds: scale to zero",
     run(0, replicas=1, target=replace(T, min_replicas=0),
         state=replace(steady(0), last_active=NOW - 301)), 0, "stable", "ValidMetricFound"),
    ("idle but idleToZero disabled: keep 1",
     run(0, replicas=1, target=replace(T, min_replicas=0),
         policy=replace(P, idle_to_zero=False),
         state=replace(steady(0), last_active=NOW - 3000)), 1, "stable", "ValidMetricFound"),
    ("Prometheus down: hold (never a scale-down on missing data)",
     run(None, replicas=6, problem=UNAVAILABLE), 6, "stable", "MetricsUnavailable"),
    ("no series for a serving model: hold, MetricsUnavailable",
     run(None, replicas=6), 6, "stable", "MetricsUnavailable"),
    ("no series while no replica is ready yet: hold, NoReadyReplicas",
     run(None, replicas=2, ready=0), 2, "stable", "NoReadyReplicas"),
    ("no series at zero replicas: nothing can wake it, hold at 0",
     run(None, replicas=0, target=replace(T, min_replicas=0)), 0, "stable", "ScaledToZero"),
    ("NaN is missing data, not zero",
     run(float("nan"), replicas=4), 4, "stable", "MetricsUnavailable"),
    ("fallback floor after 3 failed ticks raises to 5",
     run(None, replicas=2, problem=UNAVAILABLE, policy=replace(P, fallback_replicas=5),
         state=State(failed_ticks=2)), 5, "stable", "MetricsUnavailable"),
    ("fallback floor never lowers replicas",
     run(None, replicas=8, problem=UNAVAILABLE, policy=replace(P, fallback_replicas=5),
         state=State(failed_ticks=9)), 8, "stable", "MetricsUnavailable"),
    ("GPU-blocked pods: no raise past what is asked for, ScalingLimited",
     run(64, replicas=3, ready=1, gpu_blocked=2, state=steady(64)), 3, "panic",
     "ValidMetricFound"),
    ("average metric (latency): ready x value / target, 2 x 0.3 s / 0.2 s -> 3",
     run(0.3, replicas=2, target=replace(T, metric="latencyP95", target=0.2, kind="average"),
         state=steady(0.6)), 3, "stable", "ValidMetricFound"),
    ("a bad query holds and says so",
     run(None, replicas=3, problem=Problem("InvalidMetricQuery", "parse error")), 3, "stable",
     "InvalidMetricQuery"),
    ("at zero with requests held at the gateway: woken to 1 (never left at zero)",
     run(None, replicas=0, target=replace(T, min_replicas=0), gateway=3), 1, "stable",
     "GatewayDemand"),
    ("woken from zero to minReplicas when that is higher",
     run(None, replicas=0, target=replace(T, min_replicas=0, max_replicas=4), gateway=1,
         problem=Problem("ScaledToZero", "no replicas")), 1, "stable", "GatewayDemand"),
    ("idle at the runtime long enough for zero, but requests reach the gateway: stays at 1",
     run(0, replicas=1, target=replace(T, min_replicas=0), state=steady(0, 400), gateway=0.5),
     1, "stable", "ValidMetricFound"),
    ("idle at the runtime and at the gateway (its series reads 0): zero",
     run(0, replicas=1, target=replace(T, min_replicas=0), state=steady(0, 400), gateway=0.0),
     0, "stable", "ValidMetricFound"),
    ("just woken (no ready pod yet) with an old idle memory: holds, and the gateway's demand "
     "keeps it from looking idle",
     run(None, replicas=1, ready=0, target=replace(T, min_replicas=0), state=steady(0, 400),
         gateway=20), 1, "stable", "NoReadyReplicas"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("why", "d", "replicas", "mode", "active"), CASES, ids=[c[0] for c in CASES]
)
def test_decision_table(why: str, d: Decision, replicas: int, mode: str, active: str) -> None:
    assert (d.replicas, d.mode, d.active.reason) == (replicas, mode, active), d.reason


def test_gateway_demand_refreshes_the_idle_clock() -> None:
    # a model just woken from zero must not read as idle since before it went to zero
    d = run(None, replicas=1, ready=0, target=replace(T, min_replicas=0),
            state=steady(0, 400), gateway=20)  # fmt: skip
    assert d.state.last_active == NOW
    d = run(0, replicas=1, target=replace(T, min_replicas=0), state=d.state)
    assert d.replicas == 1, d.reason


def test_a_model_still_loading_is_not_idle() -> None:
    # its first pod loads for longer than idleAfterSeconds, with no request: no zero until
    # a replica has been ready (and idle) for the whole window
    zero_ok = replace(T, min_replicas=0)
    loading = replace(steady(0, 400), last_active=NOW - 400)
    d = run(0, replicas=1, ready=0, starting=1, target=zero_ok, state=loading)
    assert d.replicas == 1 and d.state.last_active == NOW, d.reason
    d = run(0, replicas=1, ready=1, target=zero_ok, state=d.state)
    assert d.replicas == 1, d.reason


def test_reason_sentence_reads_like_the_issue() -> None:
    d = run(64, replicas=3, state=steady(64), target=replace(T, max_replicas=4))
    assert d.reason == (
        "concurrency 21.3 per replica over target 8 (panic window 6 s) -> 4 replicas, "
        "capped by maxReplicas"
    )
    assert (d.limited.status, d.limited.reason) == (True, "TooManyReplicas")


def test_gpu_limit_carries_the_scheduler_message() -> None:
    msg = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    d = run(64, replicas=3, ready=1, gpu_blocked=2, gpu_message=msg, state=steady(64))  # type: ignore[arg-type]
    assert (d.limited.status, d.limited.reason, d.limited.message) == (True, "InsufficientGPU", msg)


def test_step_reaches_panic_within_the_panic_window() -> None:
    """Idle, then 4x one replica's worth each 2 s tick: panic and a raise within 6 s."""
    state, replicas, t = steady(0), 1, NOW
    raised_at = None
    for i in range(6):
        t = NOW + 2 * (i + 1)
        d = decide(T, P, Observed(replicas, replicas), Reading(32.0), state, t)
        state = d.state
        if d.replicas > replicas and raised_at is None:
            raised_at = t - NOW
        replicas = d.replicas
    assert raised_at is not None and raised_at <= 6, raised_at


# --- properties ------------------------------------------------------------------

bounds = st.tuples(st.integers(0, 20), st.integers(1, 40)).map(lambda b: (min(b), max(b)))
policies = st.builds(
    Policy,
    stable_seconds=st.sampled_from([6.0, 30.0, 60.0]),
    panic_seconds=st.sampled_from([2.0, 6.0]),
    panic_threshold=st.floats(1, 5),
    max_scale_up_rate=st.floats(1, 20),
    max_scale_down_rate=st.floats(1, 20),
    scale_down_delay_seconds=st.sampled_from([0.0, 10.0, 60.0]),
    tolerance=st.floats(0, 0.5),
    idle_to_zero=st.booleans(),
    idle_after_seconds=st.sampled_from([0.0, 30.0, 300.0]),
    fallback_replicas=st.none() | st.integers(1, 50),
)
histories = st.lists(st.floats(0, 1000), max_size=40)
loads = st.floats(0, 10_000)


@st.composite
def situations(draw: st.DrawFn) -> tuple[Target, Policy, Observed, State]:
    low, high = draw(bounds)
    target = Target(low, high, "concurrency", draw(st.floats(0.1, 100)))
    n = draw(st.integers(low, high))
    ready = draw(st.integers(0, n))
    starting = draw(st.integers(0, n - ready))
    obs = Observed(n, ready, starting, draw(st.integers(0, n - ready - starting)), "no GPU")
    values = draw(histories)
    state = State(
        samples=tuple((NOW - 2 * (len(values) - i), v) for i, v in enumerate(values)),
        recommendations=tuple((NOW - 5 * i, draw(st.integers(0, 40))) for i in range(3)),
        panic_until=draw(st.none() | st.floats(NOW - 10, NOW + 60)),
        last_active=draw(st.none() | st.floats(NOW - 1000, NOW)),
        failed_ticks=draw(st.integers(0, 5)),
    )
    return target, draw(policies), obs, state


@settings(max_examples=200, deadline=None)
@given(situations(), st.none() | loads)
def test_never_outside_min_max(
    s: tuple[Target, Policy, Observed, State], load: float | None
) -> None:
    target, policy, obs, state = s
    d = decide(target, policy, obs, Reading(load), state, NOW)
    assert target.min_replicas <= d.replicas <= target.max_replicas


@settings(max_examples=200, deadline=None)
@given(situations(), st.sampled_from(["MetricsUnavailable", "InvalidMetricQuery", "none", "nan"]))
def test_never_scales_down_on_missing_data(
    s: tuple[Target, Policy, Observed, State], kind: str
) -> None:
    target, policy, obs, state = s
    reading = (
        Reading(None) if kind == "none"
        else Reading(float("nan")) if kind == "nan"
        else Reading(problem=Problem(kind, "x"))
    )  # fmt: skip
    d = decide(target, policy, obs, reading, state, NOW)
    assert d.replicas >= obs.replicas
    assert not d.active.status


@settings(max_examples=200, deadline=None)
@given(situations(), loads)
def test_rates_respected(s: tuple[Target, Policy, Observed, State], load: float) -> None:
    import math

    target, policy, obs, state = s
    d = decide(target, policy, obs, Reading(load), state, NOW)
    n = obs.replicas
    # bounds may force a move (e.g. up to minReplicas); otherwise the rates hold
    up = max(math.ceil(max(n, 1) * policy.max_scale_up_rate - 1e-9), target.min_replicas)
    down = min(math.floor(n / policy.max_scale_down_rate + 1e-9), target.max_replicas)
    assert down <= d.replicas <= up


@settings(max_examples=200, deadline=None)
@given(situations(), loads, loads)
def test_monotone_in_load(s: tuple[Target, Policy, Observed, State], a: float, b: float) -> None:
    target, policy, obs, state = s
    low, high = sorted((a, b))
    d_low = decide(target, policy, obs, Reading(low), state, NOW)
    d_high = decide(target, policy, obs, Reading(high), state, NOW)
    assert d_low.replicas <= d_high.replicas


@settings(max_examples=200, deadline=None)
@given(situations(), loads)
def test_panic_never_scales_down(s: tuple[Target, Policy, Observed, State], load: float) -> None:
    target, policy, obs, state = s
    d = decide(target, policy, obs, Reading(load), state, NOW)
    if d.mode == "panic":
        assert d.replicas >= obs.replicas
