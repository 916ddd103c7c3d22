"""Keeps each model's last cold start (status.startup): watch stamps, wake-ups, one read.

Fed by the handlers: every pod event (`pod_event`, which stamps transitions with the
operator's clock) and every ModelDeployment event (`model_event`, which notes a wake-up
when the desired replicas go from 0 to more). Once per new Ready pod it reads the
runtime's own phases with one HTTP GET of http://<pod IP>:<port>/startup, in a task of
its own (never in a reconcile or status write; a short timeout, one retry), assembles
status.startup with the pure `startup.assemble` and asks for a status write. A read that
fails leaves the runtime's phases out and says why; it never raises.

The runtime's ServiceAccount writes nothing (it has no API access at all): the operator
reads, the runtime only answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from berth_operator import startup

logger = logging.getLogger("berth_operator.startup")

Key = tuple[str, str]
READ_TIMEOUT_S = 2.0  # seconds for one GET of /startup (a Ready runtime answers at once)
RETRY_DELAY_S = 1.0  # seconds before the one retry (not after a refused connection)
MAX_REPORT_BYTES = 64 * 1024  # the pod is the tenant's: a larger answer is refused unread
MAX_READS = 8  # reads at once: thousands of pods turning Ready never flood the operator
WAKE_TTL_S = 600.0  # a wake-up not followed by a Ready pod within this long is forgotten


class StartupReader:
    def __init__(
        self,
        port: Callable[[], int],
        spawn: Callable[[Any], None],
        on_result: Callable[[Key], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.port = port
        self.spawn = spawn
        self.on_result = on_result
        self.clock = clock
        self.seen: dict[str, startup.Seen] = {}  # pod uid -> stamps
        self.done: set[str] = set()  # pod uids read (or being read)
        self.desired: dict[Key, int] = {}
        self.woken: dict[Key, float] = {}
        self.latest: dict[Key, dict[str, Any]] = {}  # status.startup per model
        self.recorded: set[Key] = set()  # models whose status already has a startup
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(MAX_READS)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def status(self, key: Key) -> dict[str, Any] | None:
        return self.latest.get(key)

    def forget(self, key: Key) -> None:
        for cache in (self.desired, self.woken, self.latest):
            cache.pop(key, None)
        self.recorded.discard(key)

    def model_event(self, key: Key, desired: int, has_startup: bool) -> None:
        """Note a wake-up: desired replicas 0 -> more (the gateway's or anyone's /scale)."""
        before = self.desired.get(key)
        self.desired[key] = desired
        if before == 0 and desired > 0:
            self.woken[key] = self.clock()
        if has_startup:
            self.recorded.add(key)  # a status.startup exists: only news replace it

    def pod_event(self, key: Key, body: Mapping[str, Any], deleted: bool) -> None:
        pod = startup.observe_pod(body)
        if deleted:
            self.seen.pop(pod.uid, None)
            self.done.discard(pod.uid)
            return
        before = self.seen.get(pod.uid)
        seen = self.seen[pod.uid] = startup.seen_next(before, pod, self.clock())
        if not pod.is_ready or not pod.ip or pod.uid in self.done:
            return
        # a pod seen becoming Ready, or the first Ready pod of a model without a record
        if seen.ready is None and (key in self.latest or key in self.recorded):
            self.done.add(pod.uid)
            return
        self.done.add(pod.uid)
        woken = self.woken.get(key)
        if woken is not None and self.clock() - woken > WAKE_TTL_S:
            self.woken.pop(key, None)
            woken = None
        if not startup.wake_applies(woken, pod, seen):
            woken = None
        else:
            self.woken.pop(key, None)  # one wake-up, one cold start
        self.spawn(self._read(key, pod, seen, woken))

    async def _read(
        self, key: Key, pod: startup.PodTimes, seen: startup.Seen, woken: float | None
    ) -> None:
        report, missing = await self.fetch(pod.ip)
        result = startup.assemble(pod, seen, report, woken_at=woken, missing=missing)
        if result is None:
            return
        old = self.latest.get(key) or {}
        if old.get("readyAt", "") > result["readyAt"]:
            return  # a later cold start is already recorded
        self.latest[key] = result
        logger.info(
            "%s/%s pod %s started in %s s (%s)", key[0], key[1], pod.name,
            result.get("totalSeconds"),
            ", ".join(f"{p['name']} {p['seconds']}" for p in result["phases"]),
        )  # fmt: skip
        self.on_result(key)

    async def fetch(self, ip: str) -> tuple[startup.RuntimeReport | None, str]:
        """The runtime's report, or None and why not (never raises)."""
        host = f"[{ip}]" if ":" in ip else ip
        url = f"http://{host}:{self.port()}/startup"
        why = ""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=READ_TIMEOUT_S)
        for attempt in range(2):
            try:
                async with self._slots, self._client.stream("GET", url) as resp:
                    if resp.status_code != 200:
                        why = f"GET {url} answered {resp.status_code}"
                    else:
                        return startup.parse_report(json.loads(await _bounded(resp))), ""
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing there: no retry
                why = f"GET {url} failed: {type(exc).__name__}: {exc}"
                break
            except (httpx.HTTPError, ValueError) as exc:
                why = f"GET {url} failed: {type(exc).__name__}: {exc}"
            if attempt == 0:
                await asyncio.sleep(RETRY_DELAY_S)
        logger.info("runtime start-up phases not read: %s", why)
        return None, f"the runtime's phases could not be read ({why})"


async def _bounded(resp: httpx.Response) -> bytes:
    """The body, refused (ValueError) past MAX_REPORT_BYTES without reading the rest."""
    body = bytearray()
    async for chunk in resp.aiter_bytes():
        body += chunk
        if len(body) > MAX_REPORT_BYTES:
            raise ValueError(f"the answer is larger than {MAX_REPORT_BYTES} bytes")
    return bytes(body)
