"""The autoscaler loop: every tick, one query per metric type in use, a decision per model,
a write to the ModelDeployment's /scale subresource only when the decision changes.

It acts; it does not decide (decide.py) nor parse (metrics/). It reads models, pods and
ScalingPolicies from the reconciler's Kopf indexes (no API reads per tick), hands the
status block and conditions to the reconciler (which writes status and the condition
Events, coalesced), and posts ScaledUp / ScaledDown Events itself.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from berth_operator import status as st
from berth_operator.autoscaling import policy as pol
from berth_operator.autoscaling import scope
from berth_operator.autoscaling.decide import (
    Decision,
    Observed,
    Reading,
    State,
    Target,
    decide,
    replicas_text,
)
from berth_operator.autoscaling.metrics import TYPES, Key, Labels, Problem
from berth_operator.autoscaling.metrics import gateway as gateway_demand
from berth_operator.autoscaling.prometheus import BadQuery, Prometheus, Unavailable
from berth_operator.errors import ApplyError
from berth_operator.settings import AutoscalingSettings

if TYPE_CHECKING:
    from berth_operator.reconciler import Reconciler

logger = logging.getLogger("berth_operator.autoscaler")
REWRITE_AFTER = 10.0  # seconds: write the same count again if the index still shows the old one


@dataclass(frozen=True)
class TickStats:
    models: int
    queries: int
    writes: int  # /scale writes started
    seconds: float  # wall time of the tick
    cpu_seconds: float  # process CPU time used by the tick


def observed(spec: Mapping[str, Any], pods: list[st.PodObs]) -> Observed:
    live = [p for p in pods if not p.deleting]
    gpu = [p for p in live if p.unschedulable and st.GPU_SHORTAGE in p.scheduler_message]
    replicas = int(spec.get("replicas", 1))
    ready = sum(1 for p in live if p.ready)
    # asked for but not ready: pending, loading, or not even created yet
    waiting = sum(1 for p in live if not p.ready) - len(gpu)
    return Observed(
        replicas=replicas,
        ready=ready,
        starting=max(waiting, replicas - ready - len(gpu), 0),
        gpu_blocked=len(gpu),
        gpu_message=gpu[0].scheduler_message if gpu else "",
    )


def target_of(spec: Mapping[str, Any]) -> Target:
    scaling = spec["autoscaling"]
    metric = scaling.get("metric") or {}
    kind = TYPES.get(str(metric.get("type")))
    return Target(
        min_replicas=int(scaling.get("minReplicas", 0)),
        max_replicas=int(scaling.get("maxReplicas", 1)),
        metric=str(metric.get("type", "concurrency")),
        target=float(metric.get("target", 4)),
        kind=kind.kind if kind else "total",
        description=kind.description if kind else "",
    )


def _cond(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason,
            "message": message}  # fmt: skip


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"


class Autoscaler:
    """One per operator process; `run()` ticks until cancelled."""

    def __init__(
        self,
        reconciler: Reconciler,
        settings: AutoscalingSettings,
        prometheus: Prometheus | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.r = reconciler
        self.settings = settings
        self.labels = Labels(settings.namespace_label, settings.model_label, settings.rate_window)
        self.prometheus = prometheus or Prometheus(
            settings.prometheus_url, timeout=settings.query_timeout
        )
        self.clock = clock
        self.states: dict[Key, State] = {}
        self._written: dict[Key, tuple[int, float]] = {}
        self._able: dict[Key, dict[str, Any]] = {}
        self._last_scale: dict[Key, str] = {}
        self._pushed: dict[Key, tuple[Any, float]] = {}
        self._policy_counts: dict[str, int] = {}
        self._inflight: dict[Key | str, asyncio.Task[Any]] = {}  # writes in flight
        self.last: TickStats | None = None
        self.history: list[TickStats] = []  # the last few hundred ticks, for the log line

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await self.prometheus.close()

    async def run(self) -> None:
        tick = self.settings.tick_seconds
        logged = self.clock()
        while True:
            started = self.clock()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad tick stop autoscaling
                logger.exception("autoscaler tick failed")
            if self.clock() - logged >= self.settings.stats_log_seconds and self.history:
                logged = self.clock()
                self._log_stats()
            await asyncio.sleep(max(0.0, tick - (self.clock() - started)))

    def _log_stats(self) -> None:
        ticks = self.history
        self.history = []
        worst = max(t.seconds for t in ticks)
        cpu = sum(t.cpu_seconds for t in ticks) / len(ticks)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        mean = sum(t.seconds for t in ticks) / len(ticks)
        writes = sum(t.writes for t in ticks)
        logger.info(
            "autoscaler: %d ticks, %d models, %d queries/tick, tick mean %.4f s max %.4f s, "
            "CPU %.4f s/tick, %d scale writes, peak RSS %.0f MiB",
            len(ticks), ticks[-1].models, ticks[-1].queries, mean, worst, cpu, writes, rss,
        )  # fmt: skip

    # --- one tick --------------------------------------------------------------

    def _policies(self) -> dict[str, pol.Policy]:
        index = self.r.indexes.get("policy_index")
        if index is None:
            return {}
        out = {}
        for name in list(index.keys()):
            body = next(iter(index.get(name) or []), None)
            if body is not None:
                out[str(name)] = pol.from_object(body)
        return out

    async def tick(self) -> TickStats:
        cpu0, t0 = time.process_time(), time.perf_counter()
        now = self.clock()
        policies = self._policies()
        models: dict[Key, dict[str, Any]] = {}
        for key in self.r.models():
            md = self.r.model(key)
            if md is not None and md["spec"].get("autoscaling") and not self.r.terminating(key[0]):
                models[key] = md
        for gone in set(self.states) - set(models):
            self.forget(gone)

        readings: dict[Key, Reading] = {}
        chosen: dict[Key, pol.Policy] = {}
        groups: dict[tuple[str, str], list[Key]] = {}
        counts: dict[str, int] = dict.fromkeys(policies, 0)
        for key, md in models.items():
            spec = md["spec"]
            name = pol.policy_name(spec)
            found = pol.resolve(name, policies)
            if name in counts:
                counts[name] += 1
            if found is None:
                readings[key] = Reading(
                    problem=Problem(
                        "PolicyNotFound",
                        f"ScalingPolicy {name!r} (spec.autoscaling.policyRef.name) does not exist",
                    )
                )
                continue
            chosen[key] = found
            metric = spec["autoscaling"].get("metric") or {}
            kind = TYPES.get(str(metric.get("type")))
            if kind is None:
                readings[key] = Reading(
                    problem=Problem(
                        "InvalidMetricQuery", f"unknown metric type {metric.get('type')!r}"
                    )
                )
                continue
            try:
                query = kind.query(self.labels, metric.get("query"))
            except ValueError as exc:
                readings[key] = Reading(problem=Problem("InvalidMetricQuery", str(exc)))
                continue
            if kind.name == "promql":  # the tenant's own query: scoped to its namespace
                query, refused = scope.cached(
                    query, key[0], self.settings.promql, self.labels.namespace
                )
                if refused:
                    readings[key] = Reading(
                        problem=Problem(
                            "InvalidMetricQuery", f"spec.autoscaling.metric.query: {refused}"
                        )
                    )
                    continue
            groups.setdefault((kind.name, query), []).append(key)

        gateway_query = gateway_demand.query(self.labels)
        *answers, gateway_answer = await asyncio.gather(
            *(self.prometheus.vector(q) for _, q in groups),
            self.prometheus.vector(gateway_query) if models else _nothing(),
            return_exceptions=True,
        )
        for (type_, query), keys, answer in zip(groups, groups.values(), answers, strict=True):
            if isinstance(answer, Unavailable):
                problem = Problem("MetricsUnavailable", str(answer))
                readings.update((k, Reading(problem=problem)) for k in keys)
            elif isinstance(answer, BadQuery):
                problem = Problem("InvalidMetricQuery", f"Prometheus refused {query!r}: {answer}")
                readings.update((k, Reading(problem=problem)) for k in keys)
            elif isinstance(answer, BaseException):
                problem = Problem("MetricsUnavailable", f"query failed: {answer!r}")
                readings.update((k, Reading(problem=problem)) for k in keys)
            else:
                values = TYPES[type_].values(answer, self.labels, keys)
                for k in keys:
                    v = values.get(k)
                    readings[k] = Reading(problem=v) if isinstance(v, Problem) else Reading(value=v)

        if isinstance(gateway_answer, list):  # no answer: no gateway demand (changes nothing)
            demand = gateway_demand.values(gateway_answer, self.labels, models)
            for key, value in demand.items():
                readings[key] = replace(readings[key], gateway=value)

        writes = 0
        for key, md in models.items():
            write = self._decide(key, md, chosen.get(key), readings[key], now)
            if write is not None and key not in self._inflight:
                # writes queue behind the operator's other API writes (a mass create):
                # never let them stall the tick; one write per model in flight
                self._background(key, self._scale(*write))
                writes += 1
        if "policies" not in self._inflight:
            self._background("policies", self._policy_status(counts))
        stats = TickStats(
            models=len(models),
            queries=len(groups) + (1 if models else 0),
            writes=writes,
            seconds=time.perf_counter() - t0,
            cpu_seconds=time.process_time() - cpu0,
        )
        self.last = stats
        self.history.append(stats)
        del self.history[:-500]
        return stats

    def _background(self, key: Key | str, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._inflight[key] = task
        task.add_done_callback(lambda _: self._inflight.pop(key, None))

    def forget(self, key: Key) -> None:
        for cache in (self.states, self._written, self._able, self._last_scale, self._pushed):
            cache.pop(key, None)
        self.r.autoscaling.pop(key, None)

    def _decide(
        self,
        key: Key,
        md: Mapping[str, Any],
        policy: pol.Policy | None,
        reading: Reading,
        now: float,
    ) -> tuple[Key, Mapping[str, Any], int, Decision] | None:
        """Decide for one model and publish its status; the write to make, if any."""
        spec = md["spec"]
        target = target_of(spec)
        obs = observed(spec, self.r.pods(key))
        decision = decide(
            target, policy or pol.Policy(), obs, reading, self.states.get(key, State()), now
        )
        self.states[key] = decision.state
        self._publish(key, md, policy, target, obs, decision, now)
        if decision.replicas != obs.replicas and self._should_write(key, decision.replicas, now):
            return key, md, obs.replicas, decision
        return None

    def _should_write(self, key: Key, replicas: int, now: float) -> bool:
        last = self._written.get(key)
        return last is None or last[0] != replicas or now - last[1] >= REWRITE_AFTER

    async def _scale(self, key: Key, md: Mapping[str, Any], before: int, d: Decision) -> int:
        assert self.r.kube is not None
        try:
            if not await self.r.kube.scale(key[0], key[1], d.replicas):
                return 0
        except ApplyError as exc:
            logger.warning("%s/%s: %s", key[0], key[1], exc)
            self._able[key] = _cond("AbleToScale", False, "FailedUpdateScale", str(exc))
            return 0
        self._written[key] = (d.replicas, self.clock())
        self._last_scale[key] = st_now()
        self._able[key] = _cond(
            "AbleToScale",
            True,
            "SucceededRescale",
            f"the scale subresource now asks for {replicas_text(d.replicas)}",
        )
        self._pushed.pop(key, None)
        entry = self.r.autoscaling.get(key)
        if entry is not None:  # publish lastScaleTime and AbleToScale with this write
            entry["status"]["lastScaleTime"] = self._last_scale[key]
            entry["conditions"][0] = self._able[key]
            self.r.schedule_status(key)
        reason = "ScaledUp" if d.replicas > before else "ScaledDown"
        message = f"{before} -> {d.replicas}: {d.reason}"
        logger.info("%s/%s %s %s", key[0], key[1], reason, message)
        self.r.event_for(md, "Normal", reason, message)
        return 1

    def _publish(
        self,
        key: Key,
        md: Mapping[str, Any],
        policy: pol.Policy | None,
        target: Target,
        obs: Observed,
        d: Decision,
        now: float,
    ) -> None:
        able = self._able.get(key) or _cond(
            "AbleToScale", True, "ReadyForNewScale", "the autoscaler may change the replicas"
        )
        conditions = [
            able,
            _cond("ScalingActive", d.active.status, d.active.reason, d.active.message),
            _cond("ScalingLimited", d.limited.status, d.limited.reason, d.limited.message),
        ]
        value = None if d.value is None else round(d.value, 3)
        block: dict[str, Any] = {
            "metric": target.metric,
            "value": value,
            "target": target.target,
            "targets": f"{_fmt(d.value) if d.value is not None else '<unknown>'}/{target.target:g}"
            f" ({target.metric})",
            "desiredReplicas": d.replicas,
            "startingReplicas": obs.starting + obs.gpu_blocked,
            "mode": d.mode,
            "policy": policy.name if policy else pol.policy_name(md["spec"]),
            "reason": d.reason,
        }
        if key in self._last_scale:
            block["lastScaleTime"] = self._last_scale[key]
        hold = pol.hold(md["spec"], (md.get("metadata") or {}).get("annotations") or {}, policy)
        if hold:  # read by the gateway (model > policy > the gateway's default)
            block["hold"] = hold
        if value is None:
            del block["value"]
        significant = (
            {k: v for k, v in block.items() if k not in ("value", "targets", "reason")},
            [(c["status"], c["reason"], c["message"]) for c in conditions],
            d.holding and d.reason,
        )
        pushed = self._pushed.get(key)
        if (
            pushed is not None
            and pushed[0] == significant
            and now - pushed[1] < self.settings.status_refresh_seconds
        ):
            return
        self._pushed[key] = (significant, now)
        self.r.autoscaling[key] = {"status": block, "conditions": conditions}
        self.r.schedule_status(key)

    async def _policy_status(self, counts: dict[str, int]) -> None:
        if self.r.kube is None:
            return
        for name, count in counts.items():
            if self._policy_counts.get(name) == count:
                continue
            try:
                await self.r.kube.patch_policy_status(name, {"models": count})
                self._policy_counts[name] = count
            except ApplyError as exc:
                logger.warning("ScalingPolicy %s: %s", name, exc)
        for name in set(self._policy_counts) - set(counts):
            del self._policy_counts[name]


async def _nothing() -> list[Any]:
    return []


def st_now() -> str:
    from berth_operator.reconciler import now

    return now()
