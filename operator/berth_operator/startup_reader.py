"""Keeps each model's last cold start (status.startup): watch stamps, wake-ups, one read.

Fed by the handlers: every pod event (`pod_event`, which stamps transitions with the
operator's clock) and every ModelDeployment event (`model_event`, which notes a wake-up
when the desired replicas go from 0 to more). Once per new Ready pod it reads the
runtime's own phases with one HTTP GET of http://<pod IP>:<port>/startup, in a task of
its own (never in a reconcile or status write), assembles status.startup with the pure
`startup.assemble` and asks for a status write. A read that fails leaves the runtime's
phases out and says why, once; it never raises.

The pod is the tenant's, so a read is bounded in every way: at most MAX_READS at once,
one overall deadline (READ_DEADLINE_S, the retry included: a pod that drips one byte a
second is abandoned, not held for hours by per-operation timeouts), MAX_REPORT_BYTES,
and every malformed answer (not UTF-8, not JSON, too deep, numbers out of range, wrong
types) refused by `startup.decode_report` without a retry. Other models' reads go on
meanwhile.

The runtime's ServiceAccount writes nothing (it has no API access at all): the operator
reads, the runtime only answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from berth_operator import startup

logger = logging.getLogger("berth_operator.startup")

Key = tuple[str, str]
READ_TIMEOUT_S = 2.0  # seconds for each step of a GET of /startup (connect, each read)
READ_DEADLINE_S = (
    5.0  # seconds for the whole read, retry included (a Ready runtime answers at once)
)
RETRY_DELAY_S = 1.0  # seconds before the one retry (after a transport error or a non-200)
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
        try:
            result = startup.assemble(pod, seen, report, woken_at=woken, missing=missing)
        except (ArithmeticError, ValueError, OSError) as exc:  # a report past decode's checks
            missing = f"the runtime's phases could not be used ({type(exc).__name__}: {exc})"
            logger.info("%s/%s pod %s: %s", key[0], key[1], pod.name, missing)
            result = startup.assemble(pod, seen, None, woken_at=woken, missing=missing)
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
        """The runtime's report, or None and why not (logged once; never raises)."""
        host = f"[{ip}]" if ":" in ip else ip
        url = f"http://{host}:{self.port()}/startup"
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=READ_TIMEOUT_S)
        async with self._slots:  # waiting for a slot is not the pod's time
            try:
                async with asyncio.timeout(READ_DEADLINE_S):
                    report, why = await self._get(self._client, url)
            except TimeoutError:
                report = None
                why = f"GET {url} took longer than {READ_DEADLINE_S:g} s in all; abandoned"
        if report is not None:
            return report, ""
        logger.info("runtime start-up phases not read: %s", why)
        return None, f"the runtime's phases could not be read ({why})"

    async def _get(
        self, client: httpx.AsyncClient, url: str
    ) -> tuple[startup.RuntimeReport | None, str]:
        why = ""
        for attempt in range(2):
            try:
                async with client.stream("GET", url) as resp:
                    if resp.status_code != 200:
                        why = f"GET {url} answered {resp.status_code}"
                    else:
                        body = await _bounded(resp)
                        return startup.decode_report(body), ""
            except ValueError as exc:  # the answer itself is wrong: asking again cannot help
                return None, f"GET {url} answered a malformed document: {exc}"
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing there
                return None, f"GET {url} failed: {type(exc).__name__}: {exc}"
            except httpx.HTTPError as exc:
                why = f"GET {url} failed: {type(exc).__name__}: {exc}"
            if attempt == 0:
                await asyncio.sleep(RETRY_DELAY_S)
        return None, why


async def _bounded(resp: httpx.Response) -> bytes:
    """The body, refused (ValueError) past MAX_REPORT_BYTES without reading the rest."""
    body = bytearray()
    async for chunk in resp.aiter_bytes():
        body += chunk
        if len(body) > MAX_REPORT_BYTES:
            raise ValueError(f"the answer is larger than {MAX_REPORT_BYTES} bytes")
    return bytes(body)
