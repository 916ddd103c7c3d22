"""Pick the device and size torch's thread pools for this process."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger("berth.device")


def choose_device(setting: str) -> torch.device:
    """``auto`` means CUDA when available, else CPU; explicit values are honoured."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {setting} asked for CUDA but no GPU is visible")
    return device


def cpu_quota() -> int:
    """CPUs this process may use: affinity mask, capped by a cgroup v2 ``cpu.max`` quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def configure_threads(threads: int | None, device: torch.device) -> int:
    """Set torch intra-op threads; by default leave one CPU to the event loop.

    On a GPU the CPU threads only launch kernels and convert tensors, so a few suffice.
    """
    if threads is None:
        quota = cpu_quota()
        threads = min(4, quota) if device.type == "cuda" else max(1, quota - 1)
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or inter-op work started
        torch.set_num_interop_threads(1)
    log.info("torch threads: %d intra-op on %s", threads, device)
    return threads
