"""Memory and CPU of a server and every process under it, from /proc.

A pool with `MSERVE_POOL_ISOLATION=process` is a server, a forkserver it started and one worker
per loaded model: a figure read from the server's pid alone would miss all of the models. So a
server's footprint here is summed over the server and all of its descendants, found by their
parent pids in /proc/*/stat (a process that ends between the listing and the read is skipped).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Footprint:
    """Resident memory (RSS: shared library pages once per process, as separate pods would
    count them), its anonymous part (RssAnon: heap, and copy-on-write pages a forked child
    still shares with its parent), PSS (shared pages split between the processes mapping
    them), private memory (USS: pages no other process maps, what ending the process frees),
    CPU seconds used, and how many processes these are."""

    rss: int = 0
    anon: int = 0
    pss: int = 0
    uss: int = 0
    cpu_s: float = 0.0
    processes: int = 0

    def add(self, other: Footprint) -> None:
        self.rss += other.rss
        self.anon += other.anon
        self.pss += other.pss
        self.uss += other.uss
        self.cpu_s += other.cpu_s
        self.processes += other.processes


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def descendants(pid: int) -> list[int]:
    """Every process whose chain of parents reaches `pid` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def read(pid: int) -> Footprint:
    """One process's footprint (no descendants)."""
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            status[key] = int(value.split()[0]) << 10
    rollup = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        rollup[key] = int(value.split()[0]) << 10
    uss = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
    fields = _stat_fields(pid)
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    return Footprint(status.get("VmRSS", 0), status.get("RssAnon", 0), rollup.get("Pss", 0), uss, cpu, 1)


def read_tree(pid: int) -> Footprint:
    """The process's footprint plus every descendant's."""
    total = Footprint()
    for member in (pid, *descendants(pid)):
        try:
            total.add(read(member))
        except (OSError, KeyError, IndexError, ValueError):
            continue  # ended meanwhile
    return total


def measure_idle(pids: Iterable[int], idle_s: float) -> Footprint:
    """Memory summed over `pids` and their descendants at the end of `idle_s` seconds, and the
    CPU they used during them."""
    pids = list(pids)
    before = Footprint()
    for pid in pids:
        before.add(read_tree(pid))
    time.sleep(idle_s)
    total = Footprint()
    for pid in pids:
        total.add(read_tree(pid))
    total.cpu_s -= before.cpu_s
    return total
