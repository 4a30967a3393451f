"""Which models of a pool are in memory, what each holds, and which to unload to make room.

Pure bookkeeping (no I/O but reading the process's memory figures): `PoolDataPlane`
decides when to load, this decides what fits. A model's footprint is the larger of its file
size and the growth of the memory the process holds while it loaded (loads run one at a
time, so the growth is mostly its own); before its first load the file size is the estimate.

"Memory held" is glibc's count of allocated bytes (`mallinfo2`: heap in use plus mmapped
blocks), not RSS: after an unload the allocator keeps the freed pages and the next load
reuses them, so RSS growth reads near zero for every model after the first. Where
`mallinfo2` is missing (musl, glibc < 2.33) RSS growth is the fallback. The first load
also carries onnxruntime's one-time set-up (about 1.4 MB here), an overestimate for it.
"""

from __future__ import annotations

import ctypes
import enum
import os
import time
from dataclasses import dataclass
from typing import Any

from mserve_runtime.errors import MServeError

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ModelState(enum.StrEnum):
    UNAVAILABLE = "UNAVAILABLE"  # listed, never loaded, unloaded on request, or failed to load
    LOADING = "LOADING"
    READY = "READY"
    EVICTED = "EVICTED"  # unloaded to make room; loads again on its next request


class ModelUnavailable(MServeError):  # noqa: N818 (reads like ModelNotReady)
    """The model cannot be served as it is (larger than the pool's budget, or it fails to load):
    a retry gets the same answer until the model file or the budget changes."""

    status_code = 409


@dataclass(slots=True)
class Resident:
    """The pool's record of one model."""

    name: str
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = ""
    footprint_bytes: int = 0
    """Measured at its last load (kept after an unload as the next load's estimate); 0 if never."""
    last_used: float = 0.0
    active: int = 0
    """Requests holding the model now: it is not evicted while any does."""
    failed_for: tuple[int, int] | None = None
    """(size, mtime) of the file that failed to load: the same file is not tried again."""


class NoRoom(Exception):  # noqa: N818
    """Not enough memory can be freed now: the models that would have to go are in use."""

    def __init__(self, busy: list[str]) -> None:
        super().__init__(", ".join(busy))
        self.busy = busy


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (field, ctypes.c_size_t)
        for field in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo2() -> Any:
    try:
        function = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    return function


_MALLINFO2 = _mallinfo2()


def held_bytes() -> int:
    """Bytes the process's allocator has handed out and not taken back (RSS without mallinfo2)."""
    if _MALLINFO2 is None:
        return rss_bytes()
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Give the allocator's free pages back to the kernel (glibc `malloc_trim`; nothing elsewhere):
    glibc keeps what an unloaded model freed for reuse, so without it eviction frees no RSS."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def rss_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class Residency:
    """The records of every model, the memory budget, and least-recently-used eviction."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.records: dict[str, Resident] = {}
        self.reserved: dict[str, int] = {}  # loading models: their estimate, held while they load

    def record(self, name: str) -> Resident:
        found = self.records.get(name)
        if found is None:
            found = self.records[name] = Resident(name)
        return found

    @property
    def used_bytes(self) -> int:
        loaded = sum(r.footprint_bytes for r in self.records.values() if r.state is ModelState.READY)
        return loaded + sum(self.reserved.values())

    def estimate(self, name: str, file_bytes: int) -> int:
        """Memory `name` will need: its footprint at its last load, else its file size."""
        return self.record(name).footprint_bytes or file_bytes

    def touch(self, name: str) -> None:
        self.record(name).last_used = time.monotonic()

    def victims(self, need_bytes: int, keep: str) -> list[str]:
        """Loaded models to unload, least recently used first, so that `need_bytes` more fit;
        NoRoom naming the models in use when unloading every idle one is not enough."""
        free = self.budget_bytes - self.used_bytes
        if free >= need_bytes:
            return []
        loaded = [r for r in self.records.values() if r.state is ModelState.READY and r.name != keep]
        chosen: list[str] = []
        for record in sorted(loaded, key=lambda r: r.last_used):
            if record.active:
                continue
            chosen.append(record.name)
            free += record.footprint_bytes
            if free >= need_bytes:
                return chosen
        raise NoRoom(sorted(r.name for r in loaded if r.active))

    def start_loading(self, name: str, estimate_bytes: int) -> None:
        self.record(name).state = ModelState.LOADING
        self.reserved[name] = estimate_bytes

    def loaded(self, name: str, footprint_bytes: int) -> None:
        record = self.record(name)
        self.reserved.pop(name, None)
        record.state, record.reason, record.failed_for = ModelState.READY, "", None
        record.footprint_bytes = footprint_bytes
        record.last_used = time.monotonic()

    def failed(self, name: str, reason: str, file_id: tuple[int, int] | None = None) -> None:
        record = self.record(name)
        self.reserved.pop(name, None)
        record.state, record.reason, record.failed_for = ModelState.UNAVAILABLE, reason, file_id

    def unloaded(self, name: str, state: ModelState, reason: str) -> None:
        record = self.record(name)
        record.state, record.reason = state, reason
