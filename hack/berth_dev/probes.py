"""Container probes as the kubelet runs them: httpGet, tcpSocket and exec.

`check()` performs one probe; `ProbeState` applies a probe's thresholds to the
stream of results. The dev agent may shorten the period of startup and readiness
probes (`period_cap`) so a local model turns Ready within a second or two of
loading; liveness keeps its declared period, because a shorter one could kill a
slow-starting process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class ProbeSpec:
    """A probe's timing, with the Kubernetes defaults (seconds)."""

    handler: dict[str, Any]
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_pod(cls, probe: Mapping[str, Any], period_cap: float | None = None) -> ProbeSpec:
        declared = float(probe.get("periodSeconds") or 10)
        period = declared if period_cap is None else min(declared, period_cap)
        failures = int(probe.get("failureThreshold") or 3)
        # a shorter period must not shorten the time the probe allows before failing
        failures = max(failures, math.ceil(failures * declared / period))
        handler = {k: v for k, v in probe.items() if k in ("httpGet", "tcpSocket", "exec", "grpc")}
        return cls(
            handler=handler,
            initial_delay=float(probe.get("initialDelaySeconds") or 0),
            period=period,
            timeout=float(probe.get("timeoutSeconds") or 1),
            success_threshold=int(probe.get("successThreshold") or 1),
            failure_threshold=failures,
        )


def resolve_port(port: int | str, ports: Mapping[str, int]) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    if port not in ports:
        raise ValueError(f"probe names port {port!r}, which the container does not declare")
    return ports[port]


async def check(
    handler: Mapping[str, Any],
    pod_ip: str,
    ports: Mapping[str, int],
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> tuple[bool, str]:
    """One probe: (success, message). Never raises."""
    try:
        if "httpGet" in handler:
            h = handler["httpGet"]
            host = h.get("host") or pod_ip
            port = resolve_port(h["port"], ports)
            scheme = str(h.get("scheme", "HTTP")).lower()
            path = h.get("path") or "/"
            headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
            url = f"{scheme}://{host}:{port}{path}"
            async with httpx.AsyncClient(timeout=timeout, verify=False) as client:
                resp = await client.get(url, headers=headers)
            ok = 200 <= resp.status_code < 400
            return ok, f"HTTP probe {url} returned {resp.status_code}"
        if "tcpSocket" in handler:
            t = handler["tcpSocket"]
            host = t.get("host") or pod_ip
            port = resolve_port(t["port"], ports)
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True, f"TCP probe {host}:{port} connected"
        if "exec" in handler:
            cmd = list(handler["exec"].get("command") or [])
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                env=dict(env or {}),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return False, f"exec probe {cmd} timed out after {timeout:.0f}s"
            text = out.decode(errors="replace").strip()[-200:]
            return proc.returncode == 0, f"exec probe exited {proc.returncode}: {text}"
        return False, f"probe kind {sorted(handler)} is not supported by the dev node agent"
    except (httpx.HTTPError, OSError, TimeoutError, ValueError) as err:
        return False, f"probe failed: {type(err).__name__}: {err}"


@dataclass
class ProbeState:
    """Consecutive successes and failures of one probe -> its current verdict."""

    spec: ProbeSpec
    ok: bool = False
    successes: int = 0
    failures: int = 0
    message: str = ""

    def record(self, success: bool, message: str) -> bool:
        """Feed one result; return True when the verdict changed."""
        before = self.ok
        self.message = message
        if success:
            self.successes += 1
            self.failures = 0
            if self.successes >= self.spec.success_threshold:
                self.ok = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= self.spec.failure_threshold:
                self.ok = False
        return self.ok != before

    @property
    def failed(self) -> bool:
        """Whether the failure threshold is reached (liveness/startup: restart)."""
        return self.failures >= self.spec.failure_threshold
