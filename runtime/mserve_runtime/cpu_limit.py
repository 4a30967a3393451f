"""How many CPUs this process may use: the cgroup CPU limit, else the affinity mask."""

from __future__ import annotations

import math
import os
from pathlib import Path


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 `cpu.max`, else v1 `cpu.cfs_quota_us`), None if unlimited."""
    cpu_max = root / "cpu.max"
    if cpu_max.is_file():
        quota, _, period = cpu_max.read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or 100000)
    for v1 in (root / "cpu", root / "cpu,cpuacct", root):
        quota_file, period_file = v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota = int(quota_file.read_text().strip())
            if quota <= 0:
                return None
            return quota / int(period_file.read_text().strip())
    return None


def available_cpus() -> int:
    """CPUs the scheduler lets us run on (affinity mask, which honours cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def concurrent_runs(threads: int, cpus: int | None = None) -> int:
    """Model runs at once on CPU: each uses `threads` cores, and more runs than cores only contend."""
    return max(1, (cpus or available_cpus()) // max(1, threads))


def default_threads(root: Path = Path("/sys/fs/cgroup")) -> int:
    """Intra-op threads for onnxruntime: the cgroup limit rounded up, capped by the CPUs we can see."""
    cpus = available_cpus()
    limit = cgroup_cpu_limit(root)
    if limit is None:
        return cpus
    return max(1, min(cpus, math.ceil(limit)))
