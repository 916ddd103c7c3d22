"""Start, track and stop local processes: the one place that reads /proc and signals.

Used by the dev cluster (components in their own sessions, recorded by pid and a
command-line marker so a reused pid is never taken for ours), by the real node's
sweep (every process in its cgroups and mount namespace) and by the benchmarks
(server process trees).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """Whether `pid` runs and (when given) its command line contains `marker`."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if not alive(pid):
        return False
    return marker is None or marker in cmdline(pid)


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group `pgid`."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def spawn(
    argv: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`argv` in its own session (it outlives the caller), output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(cwd),
            env={**os.environ, **(env or {})},
        )


def terminate_group(pid: int, grace: float) -> None:
    """SIGTERM the process group led by `pid`, wait `grace` seconds, then SIGKILL."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and group_alive(pid):
        time.sleep(0.05)


def kill_all(pids: Iterable[int], grace: float, groups: Iterable[int] = ()) -> set[int]:
    """SIGTERM `pids` (and process groups `groups`), SIGKILL what is left after `grace`
    seconds; return the pids still alive at the end (none, unless unkillable)."""
    left = {p for p in pids if p != os.getpid()}
    groups = list(groups)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in list(left):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                left.discard(pid)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(alive(p) for p in left):
            time.sleep(0.05)
        left = {p for p in left if alive(p)}
        if not left:
            break
    return left


def namespace_members(kind: str, link: str) -> set[int]:
    """Every process whose namespace `kind` (mnt, net, ...) is `link` (a readlink value)."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/{kind}") == link:
                    found.add(int(name))
            except OSError:
                continue
    return found
