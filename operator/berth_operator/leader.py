"""Leader election on a coordination.k8s.io Lease, so only one operator replica acts.

The chart runs two replicas. Each one waits here until it holds the Lease, then runs
Kopf; it renews the Lease every `renew_s` and stops (exit code 1, the kubelet restarts
it as a standby) the moment a renewal fails for longer than the lease lasts, so two
replicas never act at once. On a graceful stop (SIGTERM, a rolling upgrade) it releases
the Lease and the standby takes over at its next try; if the active replica is killed,
the standby takes over when the Lease expires (`duration_s`). This is the protocol of
client-go's leaderelection package, the one kube-controller-manager uses.

`decide` is pure (a Lease view and the clock in, an action out); `Elector` acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

log = logging.getLogger("berth.leader")

Action = Literal["create", "renew", "takeover", "wait"]


@dataclass(frozen=True)
class LeaseView:
    """The fields of a Lease that decide who leads."""

    holder: str  # "" when released
    renew_time: float | None  # epoch seconds of the holder's last renewal
    duration_s: int


def decide(view: LeaseView | None, me: str, now: float) -> Action:
    """What `me` does with the Lease as it stands at `now`."""
    if view is None:
        return "create"
    if view.holder == me:
        return "renew"
    if not view.holder or view.renew_time is None:
        return "takeover"
    if view.renew_time + view.duration_s < now:
        return "takeover"
    return "wait"


def _parse_time(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    text = str(value).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def _micro_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def view_of(lease: dict[str, Any], default_duration: int) -> LeaseView:
    spec = lease.get("spec") or {}
    return LeaseView(
        holder=str(spec.get("holderIdentity") or ""),
        renew_time=_parse_time(spec.get("renewTime")),
        duration_s=int(spec.get("leaseDurationSeconds") or default_duration),
    )


@dataclass(frozen=True)
class ElectionSettings:
    """Timings of the election (the defaults of kube-controller-manager)."""

    # Lease name and namespace (the chart: the release's namespace).
    name: str
    namespace: str
    # This replica's identity (the pod name).
    identity: str
    # Seconds a Lease stays valid without renewal: the takeover delay after a crash.
    duration_s: int = 15
    # Seconds between renewals by the leader.
    renew_s: float = 5.0
    # Seconds between tries by a standby.
    retry_s: float = 2.0


def _lease_cls() -> Any:
    from lightkube.generic_resource import create_namespaced_resource

    return create_namespaced_resource("coordination.k8s.io", "v1", "Lease", "leases")


class Elector:
    """Acquire, renew and release one Lease through the API server."""

    def __init__(self, settings: ElectionSettings, client: Any | None = None) -> None:
        from lightkube import AsyncClient

        self.s = settings
        self.client = client if client is not None else AsyncClient()
        self.leading = False

    def _body(self, now: float, transitions: int, acquired: float | None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.s.identity,
            "leaseDurationSeconds": self.s.duration_s,
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }
        if acquired is not None:
            spec["acquireTime"] = _micro_time(acquired)
        return spec

    async def try_once(self) -> bool:
        """One round of the protocol; whether this replica holds the Lease afterwards."""
        from lightkube import ApiError

        lease_cls = _lease_cls()
        now = time.time()
        try:
            current = (
                await self.client.get(lease_cls, self.s.name, namespace=self.s.namespace)
            ).to_dict()
        except ApiError as err:
            if err.status.code != 404:
                raise
            current = None
        action = decide(
            view_of(current, self.s.duration_s) if current else None, self.s.identity, now
        )
        if action == "wait":
            return False
        try:
            if action == "create":
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.s.name, "namespace": self.s.namespace},
                    "spec": self._body(now, 0, now),
                }
                await self.client.create(lease_cls.from_dict(body))
            else:
                assert current is not None
                spec = current.get("spec") or {}
                transitions = int(spec.get("leaseTransitions") or 0)
                if action == "takeover":
                    new_spec = self._body(now, transitions + 1, now)
                else:
                    new_spec = self._body(now, transitions, None)
                    new_spec["acquireTime"] = spec.get("acquireTime")
                current["spec"] = new_spec
                # replace carries metadata.resourceVersion: a concurrent writer gets 409
                await self.client.replace(lease_cls.from_dict(current))
        except ApiError as err:
            if err.status.code in (409, 422):  # someone else wrote first
                return False
            raise
        if action in ("create", "takeover"):
            log.warning("leader election: %s now holds lease %s/%s", self.s.identity,
                        self.s.namespace, self.s.name)  # fmt: skip
        return True

    async def acquire(self) -> None:
        """Block until this replica holds the Lease."""
        log.warning("leader election: %s waiting for lease %s/%s", self.s.identity,
                    self.s.namespace, self.s.name)  # fmt: skip
        while True:
            try:
                if await self.try_once():
                    self.leading = True
                    return
            except Exception as err:  # a flaky API server: keep trying
                log.warning("leader election: %s", err)
            await asyncio.sleep(self.s.retry_s)

    async def keep(self, lost: Callable[[], Awaitable[None] | None]) -> None:
        """Renew until a renewal has failed for a whole lease duration; then call `lost`."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.s.renew_s)
            try:
                if await self.try_once():
                    last_ok = time.monotonic()
                    continue
                log.error("leader election: lease %s taken by another replica", self.s.name)
            except Exception as err:
                log.warning("leader election: renewal failed: %s", err)
                if time.monotonic() - last_ok < self.s.duration_s - self.s.renew_s:
                    continue
            self.leading = False
            result = lost()
            if result is not None:
                await result
            return

    async def release(self) -> None:
        """Give the Lease up (graceful stop) so the standby takes over at once."""
        if not self.leading:
            return
        lease_cls = _lease_cls()
        with contextlib.suppress(Exception):
            current = (
                await self.client.get(lease_cls, self.s.name, namespace=self.s.namespace)
            ).to_dict()
            if (current.get("spec") or {}).get("holderIdentity") == self.s.identity:
                current["spec"]["holderIdentity"] = ""
                current["spec"]["renewTime"] = None
                await self.client.replace(lease_cls.from_dict(current))
                log.warning("leader election: released lease %s", self.s.name)
        self.leading = False
