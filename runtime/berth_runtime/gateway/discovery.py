"""Discovery: watch ModelDeployments and the EndpointSlices of their Services (lightkube).

Each watch lists, then watches; on any error or when the server ends the stream it lists
again (so an object deleted while disconnected disappears). Bodies are reduced to the
plain dataclasses of `routing.py`, and the table is rebuilt once per burst of events
(coalesced on the event loop) and handed to `on_change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from lightkube import ALL_NS, AsyncClient
from lightkube.generic_resource import create_namespaced_resource

from berth_runtime.gateway import routing

log = logging.getLogger("berth.gateway.discovery")

ModelDeployment = create_namespaced_resource(
    "serving.berth.dev", "v1alpha1", "ModelDeployment", "modeldeployments"
)
EndpointSlice = create_namespaced_resource(
    "discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"
)
# Berth's Services carry this label and the EndpointSlice controller copies it onto slices.
MODEL_LABEL = "serving.berth.dev/model"
RELIST_DELAY = 1.0  # seconds before a failed watch lists again


def _plain(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


class Discovery:
    """Keeps `table` current; `ready` is set once both kinds were listed."""

    def __init__(
        self,
        client: AsyncClient,
        namespaces: list[str],
        on_change: Callable[[routing.Table], None],
    ) -> None:
        self.client = client
        self.namespaces = namespaces or [ALL_NS]
        self.on_change = on_change
        self.models: dict[tuple[str, str], tuple[str, routing.ModelInfo]] = {}
        self.slices: dict[tuple[str, str], routing.SliceInfo] = {}
        self.table = routing.Table()
        self.ready = asyncio.Event()
        self._listed: set[str] = set()
        self._dirty = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for ns in self.namespaces:
            self._tasks.append(asyncio.create_task(self._run("md", ns)))
            self._tasks.append(asyncio.create_task(self._run("slice", ns)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # -- state --------------------------------------------------------------------------
    def _put(self, kind: str, body: Mapping[str, Any], deleted: bool) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if kind == "md":
            if deleted or meta.get("deletionTimestamp"):
                self.models.pop(key, None)
            else:
                try:
                    info = routing.model_info(body)
                except (ValueError, AssertionError) as exc:
                    log.warning("ModelDeployment %s/%s ignored: %s", *key, exc)
                    return
                self.models[key] = (str(meta.get("creationTimestamp") or ""), info)
        elif deleted:
            self.slices.pop(key, None)
        else:
            self.slices[key] = routing.slice_info(body)
        self._mark()

    def _mark(self) -> None:
        if not self._dirty:
            self._dirty = True
            asyncio.get_running_loop().call_soon(self._rebuild)

    def _rebuild(self) -> None:
        self._dirty = False
        ordered = [
            info for _, info in sorted(self.models.values(), key=lambda x: (x[0], x[1].name))
        ]
        self.table = routing.build_table(ordered, self.slices.values())
        self.on_change(self.table)

    # -- watches ------------------------------------------------------------------------
    async def _run(self, kind: str, namespace: str) -> None:
        res = ModelDeployment if kind == "md" else EndpointSlice
        labels: dict[str, Any] = {} if kind == "md" else {MODEL_LABEL: None}
        label = f"{kind}@{namespace}"
        while True:
            try:
                fresh: dict[tuple[str, str], Any] = {}
                async for obj in self.client.list(res, namespace=namespace, labels=labels):
                    body = _plain(obj)
                    meta = body.get("metadata") or {}
                    fresh[(str(meta.get("namespace", "")), str(meta.get("name", "")))] = body
                store: dict[Any, Any] = self.models if kind == "md" else self.slices
                for key in [k for k in store if namespace == ALL_NS or k[0] == namespace]:
                    if key not in fresh:
                        store.pop(key, None)
                for body in fresh.values():
                    self._put(kind, body, deleted=False)
                self._mark()
                self._listed.add(label)
                if len(self._listed) == 2 * len(self.namespaces):
                    self.ready.set()
                async for op, obj in self.client.watch(res, namespace=namespace, labels=labels):
                    self._put(kind, _plain(obj), deleted=op == "DELETED")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server restarted, a 410 Gone, a network error
                log.warning("watch %s: %s; listing again", label, exc)
                await asyncio.sleep(RELIST_DELAY)
