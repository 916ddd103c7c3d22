"""The reconcile engine: converge children, then report status. Called by the handlers.

It reads what the cluster looks like from Kopf's in-memory indexes (filled by watch
streams, so no polling), decides with the pure builders and status functions, and
writes with `kube.Kube`. Work for one ModelDeployment is serialised by a lock;
status updates are coalesced (many pod events -> one status patch).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import kopf

from berth_operator import builders, canary, status
from berth_operator.autoscaling.policy import HOLD_ANNOTATION
from berth_operator.errors import ApplyError, ForeignObject, NamespaceTerminating, RenderError
from berth_operator.kube import Kube
from berth_operator.settings import Settings
from berth_operator.startup_reader import StartupReader

logger = logging.getLogger("berth_operator")

Key = tuple[str, str]  # (namespace, name) of a ModelDeployment
CHILD_KINDS = ("Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", "PodMonitor")
WARNING_REASONS = {
    "InvalidSpec", "InsufficientGPU", "Unschedulable", "ModelLoadFailed", "InvalidAuthToken",
    "ImagePullFailed", "ProgressDeadlineExceeded",
    "MetricsUnavailable", "InvalidMetricQuery", "PolicyNotFound", "FailedUpdateScale",
}  # fmt: skip


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plain_md(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a ModelDeployment body the operator uses, as plain dicts."""
    meta = body.get("metadata") or {}
    out: dict[str, Any] = {
        "apiVersion": builders.API_VERSION,
        "kind": builders.KIND,
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "generation": meta.get("generation"),
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "spec": _copy(body.get("spec") or {}),
        "status": _copy(body.get("status") or {}),
    }
    hold = (meta.get("annotations") or {}).get(HOLD_ANNOTATION)
    if hold is not None:  # the only annotation the operator reads (status.autoscaling.hold)
        out["metadata"]["annotations"] = {HOLD_ANNOTATION: str(hold)}
    return out


def plain_child(body: Mapping[str, Any]) -> dict[str, Any]:
    """A child without managedFields (what drift checks and status need)."""
    meta = body.get("metadata") or {}
    keep = ("name", "namespace", "uid", "resourceVersion", "generation", "labels",
            "annotations", "ownerReferences", "deletionTimestamp")  # fmt: skip
    return {
        "metadata": {k: _copy(meta[k]) for k in keep if k in meta},
        "spec": _copy(body.get("spec") or {}),
        "status": _copy(body.get("status") or {}),
    }


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _rv(obj: Mapping[str, Any] | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def owner_key(body: Mapping[str, Any]) -> tuple[Key, str] | None:
    """(ModelDeployment key, its uid) from a child's controller owner reference."""
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == builders.KIND and ref.get("apiVersion", "").startswith(
            builders.GROUP + "/"
        ):
            return (str(meta.get("namespace")), str(ref.get("name"))), str(ref.get("uid"))
    return None


def md_ref(md: Mapping[str, Any]) -> dict[str, Any]:
    meta = md["metadata"]
    return {
        "apiVersion": builders.API_VERSION,
        "kind": builders.KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
    }


def _first(store: Iterable[Any] | None) -> Any:
    return next(iter(store), None) if store is not None else None


class Reconciler:
    """Operator state: indexes bound by the handlers, caches, locks, pending status writes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kube: Kube | None = None
        self.podmonitors = False
        self.indexes: Mapping[str, Any] = {}
        self._recent: dict[tuple[str, Key], dict[str, Any]] = {}  # our own apply results
        self._locks: dict[Key, asyncio.Lock] = {}
        self._pending: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_status: dict[Key, dict[str, Any]] = {}
        self._applied_generation: dict[Key, int] = {}
        self._invalid: dict[Key, tuple[int, str]] = {}  # key -> (generation, message)
        self._terminating: dict[str, float] = {}  # namespace -> when deletion was seen
        # The autoscaler's latest status.autoscaling block and conditions, per model.
        self.autoscaling: dict[Key, dict[str, Any]] = {}
        # status.startup: the last cold start of each model (read once per new Ready pod)
        self.startups = StartupReader(
            lambda: self.settings.runtime.port, self.spawn,
            lambda key: self.schedule_status(key, delay=0),
        )  # fmt: skip
        # Event sink; replaced in tests. kopf.event queues and posts in the background.
        self.post_event: Callable[[dict[str, Any], str, str, str], None] = self._kopf_event

    def terminating(self, namespace: str) -> bool:
        """Whether the namespace was seen being deleted (in the last 10 minutes)."""
        seen = self._terminating.get(namespace)
        return seen is not None and time.monotonic() - seen < 600

    def namespace_changed(self, namespace: str, phase: str | None, deleted: bool) -> None:
        if deleted or phase == "Terminating":
            self._terminating.setdefault(namespace, time.monotonic())
        else:
            self._terminating.pop(namespace, None)

    def _event(self, md: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        if not self.terminating(md["metadata"]["namespace"]):
            self.post_event(md_ref(md), type_, reason, message)

    def event_for(self, md: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event on a ModelDeployment (not into a namespace being deleted)."""
        self._event(md, type_, reason, message)

    @staticmethod
    def _kopf_event(ref: dict[str, Any], type_: str, reason: str, message: str) -> None:
        kopf.event(cast(kopf.Body, ref), type=type_, reason=reason, message=message[:1024])

    # --- lookups -------------------------------------------------------------

    def bind(self, kwargs: Mapping[str, Any]) -> None:
        """Keep Kopf's index objects (passed to every handler as <name>_index kwargs)."""
        if "model_index" not in self.indexes:
            self.indexes = {k: v for k, v in kwargs.items() if k.endswith("_index")}

    def _index(self, name: str) -> Any:
        return self.indexes.get(name)

    def model(self, key: Key) -> dict[str, Any] | None:
        index = self._index("model_index")
        md = _first(index.get(key)) if index is not None else None
        if md is None or md["metadata"].get("deletionTimestamp"):
            return None
        return dict(md)

    def models(self) -> list[Key]:
        index = self._index("model_index")
        return list(index.keys()) if index is not None else []

    def child(self, kind: str, key: Key) -> dict[str, Any] | None:
        """The freshest view of a child: the index or our own last apply, by resourceVersion.

        `key` is the child's own (namespace, name): the ModelDeployment's key for the
        stable children, (namespace, <name>-canary) for the canary's."""
        index = self._index(f"{kind.lower()}_index")
        seen = _first(index.get(key)) if index is not None else None
        mine = self._recent.get((kind, key))
        if mine is not None and _rv(mine) > _rv(seen):
            return mine
        return seen

    def pods(self, key: Key) -> list[status.PodObs]:
        index = self._index("pod_index")
        store = index.get(key) if index is not None else None
        return list(store) if store is not None else []

    def canary_pods(self, key: Key) -> list[status.PodObs]:
        """The canary's pods (indexed apart from the stable ones: see handlers.pod_index)."""
        index = self._index("pod_index")
        store = index.get((*key, canary.CANARY)) if index is not None else None
        return list(store) if store is not None else []

    def lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def forget(self, key: Key) -> None:
        for cache in (
            self._last_status, self._applied_generation, self._invalid, self._locks,
            self.autoscaling,
        ):  # fmt: skip
            cache.pop(key, None)
        for kind in CHILD_KINDS:
            self._recent.pop((kind, key), None)
            self._recent.pop((kind, (key[0], canary.name_of(key[1]))), None)
        self.startups.forget(key)

    # --- converge ------------------------------------------------------------

    def render(self, md: Mapping[str, Any]) -> builders.Children:
        children = builders.render(md, self.settings, podmonitor=self.podmonitors)
        canary.render(md, self.settings, children, keep=self.promoting(md, children))
        return children

    def promoting(self, md: Mapping[str, Any], children: builders.Children | None = None) -> bool:
        """Whether a canary promotion is under way (canary.promoting, with what we observe)."""
        ns, name = md["metadata"]["namespace"], md["metadata"]["name"]
        if canary.spec_of(md) is not None:
            return False
        canary_dep = self.child("Deployment", (ns, canary.name_of(name)))
        if canary_dep is None:
            return False
        if children is None:
            children = builders.render(md, self.settings, podmonitor=self.podmonitors)
        stable = self.child("Deployment", (ns, name))
        return canary.promoting(md, canary_dep, stable, children.by_kind("Deployment"))

    async def converge(self, md: Mapping[str, Any], *, cause: str) -> list[str]:
        """Apply every child that is missing, outdated or drifted; delete unwanted ones.

        Returns what changed ("Created Deployment m", ...). Raises RenderError (nothing
        written) or ApplyError (retry later).
        """
        changes: list[str] = []
        assert self.kube is not None
        meta = md["metadata"]
        key: Key = (meta["namespace"], meta["name"])
        generation = int(meta.get("generation") or 0)
        async with self.lock(key):
            try:
                children = self.render(md)
                pending = [
                    (m, self.child(m["kind"], _key_of(m)))
                    for m in children.apply
                    if builders.needs_apply(m, self.child(m["kind"], _key_of(m)))
                ]
                await self._refuse_foreign(md, [m for m, seen in pending if seen is None])
            except RenderError as exc:
                known = self._invalid.get(key)
                self._invalid[key] = (generation, str(exc))
                self._applied_generation[key] = generation
                if known != (generation, str(exc)):
                    self._event(md, "Warning", "InvalidSpec", str(exc))
                self.schedule_status(key, delay=0)
                raise
            self._invalid.pop(key, None)
            # Children are independent: write them concurrently (the Deployment, listed
            # first, still goes out first through the client's write queue).
            results = await asyncio.gather(
                *(self.kube.apply(m) for m, _ in pending), return_exceptions=True
            )
            failed: BaseException | None = None
            for (manifest, observed), result in zip(pending, results, strict=True):
                if isinstance(result, NamespaceTerminating):
                    self._terminating[key[0]] = time.monotonic()
                    return changes
                if isinstance(result, BaseException):
                    failed = failed or result
                    continue
                kind = manifest["kind"]
                self._recent[(kind, _key_of(manifest))] = plain_child(result)
                reason, message = _describe(kind, manifest, observed, cause)
                self._event(md, "Normal", reason, message)
                changes.append(f"{reason} {kind}")
            if failed is not None:
                raise failed
            for api_version, kind, name in children.absent:
                if self.child(kind, (key[0], name)) is None:
                    continue
                self._recent.pop((kind, (key[0], name)), None)
                if await self.kube.delete(api_version, kind, meta["namespace"], name):
                    self._event(md, "Normal", "Deleted", f"{kind} {name} deleted")
                    changes.append(f"Deleted {kind}")
            self._applied_generation[key] = generation
        self.schedule_status(key, delay=0)
        if changes or cause not in ("drift", "deleted"):
            done = {"create": "created", "update": "updated", "resume": "resumed"}.get(cause, cause)
            logger.info("%s/%s %s: %s", key[0], key[1], done, ", ".join(changes) or "no change")
        return changes

    async def _refuse_foreign(self, md: Mapping[str, Any], unseen: list[builders.Manifest]) -> None:
        """Never take over an object Berth does not own (server-side apply with force would).

        A child the indexes do not know may still exist, created by someone else under the
        same name: if its controller is not this ModelDeployment, nothing is written and the
        model reports it (Degraded, one Event) until the object is renamed or removed.
        """
        assert self.kube is not None
        meta = md["metadata"]
        uid = str(meta.get("uid", ""))
        for manifest in unseen:
            owner = await self.kube.controller_uid(
                manifest["apiVersion"], manifest["kind"], meta["namespace"],
                manifest["metadata"]["name"],
            )  # fmt: skip
            if owner is not None and owner != uid:
                kind, name = manifest["kind"], manifest["metadata"]["name"]
                whose = "no controller" if not owner else f"another controller (uid {owner})"
                raise ForeignObject(
                    "metadata.name",
                    f"a {kind} named {name!r} already exists in namespace {meta['namespace']} "
                    f"with {whose}; Berth never takes over objects it does not own: rename the "
                    f"ModelDeployment or remove that {kind}",
                )

    async def converge_key(self, key: Key, *, cause: str, retries: int = 5) -> None:
        """Converge from a child's event (no Kopf retry there): retry a few times ourselves."""
        for attempt in range(retries):
            md = self.model(key)
            if md is None or self.terminating(key[0]):
                return
            try:
                await self.converge(md, cause=cause)
                return
            except RenderError:
                return
            except ApplyError as exc:
                logger.warning("%s/%s: %s (attempt %d)", key[0], key[1], exc, attempt + 1)
                await asyncio.sleep(min(30.0, 1.0 * 2**attempt))

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_child_event(
        self, kind: str, event_type: str | None, body: Mapping[str, Any]
    ) -> None:
        """A child changed: restore it if it drifted or vanished; refresh the status."""
        owner = owner_key(body)
        if owner is None:
            return
        key, uid = owner
        md = self.model(key)
        if md is None or md["metadata"]["uid"] != uid:
            return
        own = (key[0], str((body.get("metadata") or {}).get("name", "")))  # the child's key
        if event_type == "DELETED":
            self._recent.pop((kind, own), None)
            # The owner may be going away (garbage collection): confirm before recreating.
            assert self.kube is not None
            try:
                live = await self.kube.get_model(*key)
            except ApplyError:
                live = md
            if live is None or live["metadata"].get("uid") != uid:
                return
            if live["metadata"].get("deletionTimestamp"):
                return
            self.spawn(self.converge_key(key, cause="deleted"))
        else:
            child = plain_child(body)
            mine = self._recent.get((kind, own))
            if mine is not None and _rv(child) >= _rv(mine):
                self._recent.pop((kind, own), None)
            try:
                wanted = next(
                    (m for m in self.render(md).apply if (m["kind"], _key_of(m)) == (kind, own)),
                    None,
                )
            except RenderError:
                wanted = None
            if wanted is not None and builders.needs_apply(wanted, child):
                self.spawn(self.converge_key(key, cause="drift"))
        if kind == "Deployment":
            self.schedule_status(key)
            if canary.spec_of(md) is None and self.child(
                "Deployment", (key[0], canary.name_of(key[1]))
            ):
                # a promotion waits for the stable rollout: delete the canary once it is done
                self.spawn(self.converge_key(key, cause="promoted"))

    async def reconcile_all(self, *, cause: str) -> None:
        """Converge every known ModelDeployment (e.g. after the PodMonitor CRD appears)."""
        for key in self.models():
            await self.converge_key(key, cause=cause, retries=2)

    # --- status --------------------------------------------------------------

    def schedule_status(self, key: Key, delay: float | None = None) -> None:
        """Coalesce: at most one pending status write per ModelDeployment."""
        if key in self._pending:
            return
        self._pending.add(key)
        wait = self.settings.reconcile.status_delay if delay is None else delay
        self.spawn(self._status_later(key, wait))

    async def _status_later(self, key: Key, delay: float) -> None:
        await asyncio.sleep(delay)
        self._pending.discard(key)
        try:
            async with self.lock(key):
                await self.write_status(key)
        except ApplyError as exc:
            logger.warning("%s/%s: status not written: %s; retrying", key[0], key[1], exc)
            await asyncio.sleep(2)
            self.schedule_status(key)

    def observe(self, key: Key, md: Mapping[str, Any]) -> dict[str, Any]:
        dep_body = self.child("Deployment", key)
        dep = status.observe_deployment(dep_body) if dep_body is not None else None
        generation = int(md["metadata"].get("generation") or 0)
        invalid = self._invalid.get(key)
        invalid_message = invalid[1] if invalid and invalid[0] == generation else None
        previous = self._last_status.get(key) or md.get("status") or {}
        observed = self._applied_generation.get(key, previous.get("observedGeneration"))
        out = status.compute(
            md, dep, self.pods(key), self.settings,
            invalid=invalid_message, observed_generation=observed,
            previous=previous, now=now(), autoscaling=self.autoscaling.get(key),
        )  # fmt: skip
        started = self.startups.status(key)
        if started is not None:
            out["startup"] = started
        promoting = False
        if canary.spec_of(md) is None:
            try:
                promoting = self.promoting(md)
            except RenderError:
                promoting = False
        if canary.spec_of(md) is not None or promoting:
            body = self.child("Deployment", (key[0], canary.name_of(key[1])))
            canary_dep = status.observe_deployment(body) if body is not None else None
            status.add_canary(
                out, md, dep, canary_dep, self.canary_pods(key), previous, now(),
                promoting=promoting,
            )  # fmt: skip
        return out

    async def write_status(self, key: Key) -> None:
        assert self.kube is not None
        md = self.model(key)
        if md is None or self.terminating(key[0]):
            return
        previous = self._last_status.get(key) or md.get("status") or {}
        new = self.observe(key, md)
        stale = [f for f in ("canary", "traffic") if f not in new and previous.get(f)]
        if status.same_status(previous, new) and not stale:
            return
        patch = new
        if "autoscaling" not in new and previous.get("autoscaling"):
            patch = {**new, "autoscaling": None}  # autoscaling removed from the spec
        if stale:  # spec.canary removed: drop its status
            patch = {**patch, **dict.fromkeys(stale)}
        if not await self.kube.patch_status(key[0], key[1], patch):
            return
        self._last_status[key] = new
        told: set[tuple[str, str]] = set()
        changes = status.condition_changes(previous, new)
        # Degraded first: when Ready says the same, the Event names the condition to act on
        for cond in sorted(changes, key=lambda c: c["type"] != "Degraded"):
            if cond["reason"] == "InvalidSpec":
                continue  # converge() already posted the one Event for this refusal
            if (cond["reason"], cond["message"]) in told:
                continue  # Ready=False and Degraded=True saying the same thing: one Event
            told.add((cond["reason"], cond["message"]))
            bad = cond["reason"] in WARNING_REASONS and (
                cond["type"] != "Degraded" or cond["status"] == "True"
            )
            message = f"{cond['type']}={cond['status']}: {cond['message']}"
            self._event(md, "Warning" if bad else "Normal", cond["reason"], message)


def _key_of(manifest: Mapping[str, Any]) -> Key:
    """A child manifest's own (namespace, name)."""
    meta = manifest["metadata"]
    return str(meta["namespace"]), str(meta["name"])


def _describe(
    kind: str, manifest: Mapping[str, Any], observed: Mapping[str, Any] | None, cause: str
) -> tuple[str, str]:
    name = manifest["metadata"]["name"]
    if observed is None:
        if cause in ("deleted", "drift"):
            return "Restored", f"{kind} {name} was deleted; recreated"
        return "Created", f"{kind} {name} created"
    want = manifest["metadata"]["annotations"][builders.HASH_ANNOTATION]
    have = ((observed.get("metadata") or {}).get("annotations") or {}).get(builders.HASH_ANNOTATION)
    if want == have:
        return "Restored", f"{kind} {name} was changed by hand; restored"
    return "Updated", f"{kind} {name} updated"
