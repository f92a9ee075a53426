"""torch's CPU threads within the container's CPU quota.

torch starts as many intra-op threads as the machine has cores, whatever CPU limit the container
runs under (Kubernetes ``limits.cpu``, ``docker run --cpus``). Under a quota smaller than that,
the threads take turns being throttled by the kernel's CFS, and every parallel region waits for
the slowest. With no ``OMP_NUM_THREADS`` set, the services cap torch's threads at the quota,
rounded up.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger("ragraph.serving")

CGROUP = Path("/sys/fs/cgroup")


def cpu_quota(root: Path = CGROUP) -> float | None:
    """CPUs the cgroup's CFS quota allows (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``);
    None when there is no quota or no cgroup file to read."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        for directory in (root / "cpu", root / "cpu,cpuacct"):
            quota_file, period_file = directory / "cpu.cfs_quota_us", directory / "cpu.cfs_period_us"
            if quota_file.is_file() and period_file.is_file():
                quota_us, period_us = int(quota_file.read_text()), int(period_file.read_text())
                return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def fit_threads_to_quota(root: Path = CGROUP) -> int | None:
    """Lower torch's intra-op threads to the CPU quota (rounded up) when the quota is below them
    and OMP_NUM_THREADS is not set; returns the new count, None when nothing changed."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    quota = cpu_quota(root)
    if quota is None:
        return None
    import torch

    threads = max(1, math.ceil(quota))
    if threads >= torch.get_num_threads():
        return None
    log.info("CPU quota %.2f: torch uses %d threads instead of %d", quota, threads, torch.get_num_threads())
    torch.set_num_threads(threads)
    return threads
