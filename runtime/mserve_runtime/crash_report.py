"""What a dying runtime leaves for `kubectl describe pod`: the container's termination message.

The kubelet copies the end (4096 bytes) of `/dev/termination-log` into the container's
`lastState.terminated.message` when the container ends. This module keeps that file:

- a fixed-size block at its start says, at every moment, which models have requests in flight
  and which model is loading (rewritten in place, with one `pwrite`, only when that set
  changes). It is what a process killed by SIGKILL (the kernel's OOM killer at the memory
  limit) leaves: no code runs then, the block is simply the last thing written;
- after the block, Python's `faulthandler` appends, on SIGSEGV, SIGFPE, SIGABRT, SIGBUS or
  SIGILL, the crashing thread's Python stack. Each model's runs go through a frame named after
  the model (`frame_named`), so that stack names the model whose run crashed;
- a clean exit empties the file: an empty message means no crash.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import stat
import types
from collections.abc import Callable
from typing import Any, TypeVar

from mserve_runtime.errors import ConfigError

log = logging.getLogger("mserve.crash")

SETTING = "MSERVE_CRASH_REPORT_FILE"
KUBERNETES_PATH = "/dev/termination-log"
BLOCK_BYTES = 640
# The kubelet keeps this much of the file's end; the block plus one thread's stack fit in it.
KUBELET_KEEPS = 4096

F = TypeVar("F", bound=Callable[..., Any])


def frame_named(call: F, label: str) -> F:
    """`call` behind one more frame whose function is named `label`: a stack dump of a thread
    inside it (faulthandler's, py-spy's) shows `label`."""

    def through(*args: Any, **kwargs: Any) -> Any:
        return call(*args, **kwargs)

    code = through.__code__.replace(co_name=label, co_qualname=label)
    return types.FunctionType(code, through.__globals__, label, None, through.__closure__)  # type: ignore[return-value]


class CrashReport:
    """The termination log, kept up to date (see the module's docstring)."""

    def __init__(self, path: str, serving: str, per_model: bool = True) -> None:
        """`serving` says what the process serves; `per_model`: the block lists models (a pool)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            self._block_fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the crash report to {path!r} ({SETTING}): {exc.strerror}"
            ) from None
        if not stat.S_ISREG(os.fstat(self._block_fd).st_mode):
            os.close(self._block_fd)
            raise ConfigError(f"the crash report {path!r} ({SETTING}) is not a regular file")
        os.ftruncate(self._block_fd, 0)
        self._append_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.path = path
        self.serving = serving
        self.per_model = per_model
        self.in_flight: set[str] = set()
        self.loading: str | None = None
        self._failed = False
        self._write()
        faulthandler.enable(self._append_fd, all_threads=False)

    @classmethod
    def from_setting(cls, path: str, serving: str, per_model: bool = True) -> CrashReport | None:
        """None when `path` is empty, or is Kubernetes' default path outside Kubernetes (where
        the kubelet has not created it); ConfigError naming the setting if it cannot be written."""
        if not path or (path == KUBERNETES_PATH and not os.path.exists(path)):
            return None
        try:
            return cls(path, serving, per_model)
        except ConfigError as exc:
            if path != KUBERNETES_PATH:
                raise
            log.warning("crash report off: %s", exc)  # the default must never stop a pod
            return None

    def busy(self, name: str, now: bool) -> None:
        """`name` has requests in flight (`now`) or no longer has any."""
        if now:
            self.in_flight.add(name)
        else:
            self.in_flight.discard(name)
        self._write()

    def load(self, name: str | None) -> None:
        """`name` is loading now (None: no load is running)."""
        self.loading = name
        self._write()

    def _write(self) -> None:
        text = f"mserve ({self.serving}) ended while serving, not by a clean shutdown.\n"
        if self.per_model:
            names = ", ".join(sorted(self.in_flight)) or "none"
            text += f"models with requests in flight: {names}\nmodel loading: {self.loading or 'none'}\n"
        if len(text) > BLOCK_BYTES - 1:
            text = text[: BLOCK_BYTES - 5] + "...\n"
        try:
            os.pwrite(self._block_fd, text.encode().ljust(BLOCK_BYTES - 1) + b"\n", 0)
        except OSError as exc:  # a full disk must not fail the request that changed the list
            if not self._failed:
                log.warning("cannot update the crash report %s: %s", self.path, exc.strerror)
            self._failed = True

    def close(self) -> None:
        """A clean exit: the fault handler off, the file emptied."""
        faulthandler.disable()
        os.ftruncate(self._block_fd, 0)
        os.close(self._append_fd)
        os.close(self._block_fd)
