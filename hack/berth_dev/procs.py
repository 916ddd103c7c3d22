"""Local processes of the node agent: start, identify across restarts, stop (no orphans).

Each container runs as the leader of its own session and process group, so a pod's
whole process tree is signalled at once. A process is identified by (pid, start time
in clock ticks since boot), so a restarted agent never mistakes a reused pid for its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


def start_ticks(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/<pid>/stat); None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: int, ticks: int | None) -> bool:
    got = start_ticks(pid)
    return got is not None and (ticks is None or got == ticks)


def group_members(pgid: int) -> list[int]:
    """Non-zombie processes in process group `pgid`."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(stat.parent.name))
    return out


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class Proc:
    """A container process: a child of this agent, or one adopted from a previous agent."""

    pid: int
    ticks: int | None
    child: asyncio.subprocess.Process | None = None

    async def wait(self) -> tuple[int, int | None]:
        """Wait for the leader to exit; return (exit code, signal or None).

        An adopted process is not our child, so its status is unknown: 255, None.
        """
        if self.child is not None:
            rc = await self.child.wait()
            if rc < 0:
                return 128 - rc, -rc
            return rc, None
        while alive(self.pid, self.ticks):
            await asyncio.sleep(0.5)
        return 255, None

    def running(self) -> bool:
        if self.child is not None:
            return self.child.returncode is None
        return alive(self.pid, self.ticks)

    async def stop(self, grace: float) -> None:
        """SIGTERM the group, wait up to `grace` seconds, SIGKILL what is left."""
        signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.running() or group_members(self.pid)):
            await asyncio.sleep(0.1)
        await self.kill()

    async def kill(self) -> None:
        """SIGKILL the whole group and wait until nothing of it is left."""
        if self.running() or group_members(self.pid):
            signal_group(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (self.running() or group_members(self.pid)):
            await asyncio.sleep(0.05)
        if self.child is not None and self.child.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.child.wait(), 2)


async def start(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start {argv}\n".encode())
        out.flush()
        child = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=str(cwd),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(child.pid, start_ticks(child.pid), child)


def kill_recorded(records: list[tuple[int, int | None]], grace: float = 5.0) -> list[int]:
    """Synchronously stop recorded (pid, ticks) groups still alive; return their pids.

    Used by `berth dev down` as a safety net after the agent itself has stopped.
    """
    live = [(pid, t) for pid, t in records if alive(pid, t) or group_members(pid)]
    for pid, _ in live:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(group_members(p) for p, _ in live):
        time.sleep(0.1)
    for pid, _ in live:
        if group_members(pid):
            signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(group_members(p) for p, _ in live):
        time.sleep(0.05)
    return [p for p, _ in live]
