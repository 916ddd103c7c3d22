"""Start a server process tree pinned to CPUs, account its CPU time, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of one live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def tree(root: int) -> dict[int, float]:
    """pid -> CPU seconds for `root` and all its live descendants."""
    info: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                info[int(name)] = st
    out: dict[int, float] = {}
    frontier = [root]
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in info.items():
        children.setdefault(ppid, []).append(pid)
    while frontier:
        pid = frontier.pop()
        if pid in info and pid not in out:
            out[pid] = info[pid][1]
            frontier.extend(children.get(pid, []))
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the tree used between two snapshots (new processes count in full)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def prefix(cpus: str | None, nice: int = 0) -> list[str]:
    """`nice -n N taskset -c CPUS` as needed (a negative nice needs root; without it
    `nice` warns and runs the command anyway)."""
    out: list[str] = []
    if nice:
        out += ["nice", "-n", str(nice)]
    if cpus:
        out += ["taskset", "-c", cpus]
    return out


class Server:
    """A server started in its own session, optionally pinned with taskset."""

    def __init__(
        self,
        cmd: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log: Path,
        cpus: str | None,
        nice: int = 0,
    ) -> None:
        # Started unpinned (start-up is not measured, and Ray's raylet gives up on its
        # agents after a fixed ~50 s on one busy core); pin() before measuring.
        self.cpus = cpus
        cmd = prefix(None, nice) + cmd
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._logf = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.known: set[int] = {self.proc.pid}

    def snapshot(self) -> dict[int, float]:
        snap = tree(self.proc.pid)
        self.known |= set(snap)
        return snap

    def pin(self) -> list[int]:
        """Pin every thread of every process in the tree to `cpus`; return the pids."""
        pids = sorted(self.snapshot())
        if self.cpus:
            for pid in pids:
                subprocess.run(
                    ["taskset", "-a", "-p", "-c", self.cpus, str(pid)],
                    capture_output=True,
                    check=False,
                )
        return pids

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        self.snapshot()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in list(self.known):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    self.known.discard(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(_alive(p) for p in self.known):
                time.sleep(0.1)
                self.proc.poll()
            if not any(_alive(p) for p in self.known):
                break
        self.proc.poll()
        self._logf.close()


def _alive(pid: int) -> bool:
    st = _stat(pid)
    if st is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except OSError:
        return False
