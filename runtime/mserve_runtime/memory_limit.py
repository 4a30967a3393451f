"""How much memory this process may use: the cgroup memory limit, else the machine's RAM."""

from __future__ import annotations

import os
from pathlib import Path

# cgroup v1 reports "no limit" as the largest page-aligned int64 (9223372036854771712).
_V1_UNLIMITED = 1 << 62


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < _V1_UNLIMITED else None


def _own_cgroup_dirs(root: Path, proc_cgroup: Path) -> list[Path]:
    """This process's cgroup folders (v2 unified, v1 memory) and their ancestors up to `root`."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    dirs: list[Path] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        base = root if controllers == "" else root / "memory" if "memory" in controllers.split(",") else None
        if base is None or path in ("", "/"):
            continue
        here = base / path.lstrip("/")
        while here != base and base in here.parents:
            dirs.append(here)
            here = here.parent
    return dirs


def cgroup_memory_limit(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int | None:
    """Bytes allowed by the cgroup (v2 `memory.max`, v1 `memory.limit_in_bytes`), None if unlimited.

    In a pod the cgroup namespace puts the container's own cgroup at `root`; outside one,
    the process's cgroup from `proc_cgroup` and every ancestor count, and the smallest wins.
    """
    candidates = [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    for folder in _own_cgroup_dirs(root, proc_cgroup):
        candidates += [folder / "memory.max", folder / "memory.limit_in_bytes"]
    limits = [limit for path in candidates if (limit := _read_limit(path)) is not None]
    return min(limits) if limits else None


def physical_memory() -> int | None:
    """Bytes of RAM the machine has (what an unlimited process can grow to)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int:
    """The cgroup limit when there is one, else physical memory (4 GiB when neither is known)."""
    return cgroup_memory_limit(root, proc_cgroup) or physical_memory() or 4 << 30
