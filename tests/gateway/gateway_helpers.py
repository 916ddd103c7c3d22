"""Small helpers for the gateway's cluster tests (manifests, kubectl JSON, polling, load)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from kube_helpers import LOCAL_NODE, apply, kget, wait_for  # noqa: F401 (re-exported)

CNN_BODY = json.dumps({"inputs": [{"name": "input__0", "datatype": "FP32",
                                   "shape": [1, 3, 32, 32], "data": [0.5] * 3072}]})  # fmt: skip


def model(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    spec.setdefault("model", {"uri": "pvc://models/small-cnn", "format": "torchscript"})
    spec.setdefault("resources", {"cpu": "500m", "memory": "1Gi"})
    spec.setdefault("scheduling", LOCAL_NODE)
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "serving.berth.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": meta, "spec": spec}  # fmt: skip


def cnn_claim(cluster: Any, ns: str) -> str:
    """The small CNN's weights under a `models` claim in `ns`; returns the PV name."""
    from berth_dev.examples import claim_manifests
    from berth_dev.weights import write_cnn

    models = Path(cluster.paths.root) / "pvc" / ns / "models"
    models.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torch.jit.script's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        write_cnn(models)
    pv = f"berth-gw-{ns}"[:60]
    cluster.kubectl(
        "apply", "-f", "-", input=claim_manifests(ns, models, pv, {"berth.dev/test": "true"})
    )
    return pv


def ready_pods(cluster: Any, ns: str, name: str) -> list[dict[str, Any]]:
    out = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l",
                                     f"app.kubernetes.io/instance={name}", "-o", "json").stdout)  # fmt: skip
    return [p for p in out["items"]
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True"
                    for c in (p.get("status") or {}).get("conditions") or [])]  # fmt: skip


def pods(cluster: Any, ns: str, name: str) -> list[dict[str, Any]]:
    out = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l",
                                     f"app.kubernetes.io/instance={name}", "-o", "json").stdout)  # fmt: skip
    return list(out["items"])


def events(cluster: Any, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    items = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    return [e for e in items
            if (e.get("involvedObject") or {}).get("name") == name and e.get("reason") == reason]  # fmt: skip


def metric(base: str, name: str, **labels: str) -> float | None:
    """One sample of the gateway's /metrics (None when absent)."""
    text = httpx.get(f"{base}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


class SteadyLoad:
    """Open-loop load at `rps` requests per second in a thread, for as long as it runs.

    Each request is recorded with its status code or its exception type; `failures()`
    lists everything that was not a 200."""

    def __init__(self, url: str, body: str, rps: float = 25.0, timeout: float = 30.0) -> None:
        self.url, self.body, self.rps, self.timeout = url, body, rps, timeout
        self.results: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.started = self.stopped = 0.0

    def __enter__(self) -> SteadyLoad:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 10)
        self.stopped = time.monotonic()

    async def _one(self, client: httpx.AsyncClient) -> None:
        t = time.monotonic()
        try:
            r = await client.post(self.url, content=self.body,
                                  headers={"content-type": "application/json"})  # fmt: skip
        except httpx.HTTPError as exc:
            self.results.append((t, type(exc).__name__))
            return
        self.results.append((t, str(r.status_code)))
        self.answered(t, r)

    def answered(self, t: float, r: httpx.Response) -> None:
        """A hook for subclasses: the response to the request sent at `t`."""

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            tasks = set()
            period = 1.0 / self.rps
            nxt = time.monotonic()
            while not self._stop.is_set():
                task = asyncio.create_task(self._one(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                nxt += period
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            await asyncio.gather(*tasks)

    def failures(self) -> Counter[str]:
        return Counter(code for _, code in self.results if code != "200")

    def rate(self) -> float:
        return len(self.results) / max(self.stopped - self.started, 1e-9)
