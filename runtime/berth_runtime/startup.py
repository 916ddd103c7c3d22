"""The runtime's own start-up phases, timed on the wall clock, for the operator to read.

Phases (names as in the ModelDeployment's ``status.startup``):

- ``Fetching``: the model URI resolved to a local path (downloaded, verified, unpacked;
  near zero for ``pvc://`` and file paths).
- ``Loading``: the model read into memory and onto the device.
- ``WarmingUp``: the warm-up inference; the model turns ready when it ends.

Before them, ``processStartedAt`` (when the kernel started this process, from
``/proc``) and ``importedAt`` (when the server's imports were done and it began to
load) tell the interpreter's start and imports apart from the model's own work.

The clock lives on the event loop's side only for reads; phases are stamped by the
loading thread in order and each stamp is a single assignment, so no lock is needed.
Served as JSON on ``GET /startup`` (no token needed, like the probes) and as the
``berth_runtime_startup_phase_seconds{phase}`` gauge. A phase that did not happen (a
test's loader that fetches and loads in one step) is absent, never zero.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

PHASES = ("Fetching", "Loading", "WarmingUp")
PATH = "/startup"


def process_started_at() -> float | None:
    """Wall-clock time this process started (10 ms resolution), from /proc; None elsewhere."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            stat = f.read()
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        # field 22 (starttime, clock ticks after boot); the command name may hold spaces
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - ticks / hz)


@dataclass
class Phase:
    name: str
    start: float
    end: float | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)


@dataclass
class StartupClock:
    """Wall-clock stamps of this process' start-up."""

    process_started_at: float | None = field(default_factory=process_started_at)
    imported_at: float | None = None
    ready_at: float | None = None
    failed: str = ""
    phases: list[Phase] = field(default_factory=list)

    def imported(self) -> None:
        """The server's imports are done; loading begins."""
        if self.imported_at is None:
            self.imported_at = time.time()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one phase; a phase that raises keeps no end (it did not finish)."""
        assert name in PHASES, name
        self.imported()
        entry = Phase(name, time.time())
        self.phases.append(entry)
        yield
        entry.end = time.time()

    def mark_ready(self) -> None:
        self.ready_at = time.time()

    def durations(self) -> dict[str, float]:
        """Finished phases and their seconds."""
        return {p.name: s for p in self.phases if (s := p.seconds) is not None}

    def document(self, model: str, ready: bool) -> dict[str, Any]:
        """The JSON the operator reads (unix seconds; absent values are null)."""
        return {
            "model": model,
            "ready": ready,
            "processStartedAt": self.process_started_at,
            "importedAt": self.imported_at,
            "readyAt": self.ready_at,
            "failed": self.failed or None,
            "phases": [
                {"name": p.name, "start": p.start, "end": p.end, "seconds": p.seconds}
                for p in self.phases
            ],
        }
