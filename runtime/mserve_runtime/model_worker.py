"""A pool model in a process of its own (`MSERVE_POOL_ISOLATION=process`).

The serving process keeps HTTP, gRPC, decoding, admission and batching; only the
onnxruntime session lives in the worker, and `WorkerSession` stands in for it (the
attributes of `onnxruntime.InferenceSession` that `OnnxModel` and `OutputBound` read). A
segfault, an abort or the kernel's OOM killer then ends one model's worker, not the server:
the runs waiting on it get `ModelCrashed` (503) and the model loads again on its next request.

Workers are forked by one `multiprocessing` forkserver that has imported numpy, onnxruntime
and this module, so a worker shares those pages with it (copy-on-write) and costs only what
its model and its own writes add. Each worker asks the kernel to prefer it to the server
when the pod runs out of memory (`oom_score_adj` 1000), and to end it if its parent does.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import multiprocessing
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
import onnxruntime as ort

from mserve_runtime.errors import ModelLoadError, MServeError
from mserve_runtime.onnx_model import _ORT_INPUT_ERRORS, SessionConfig, load_model

_PR_SET_PDEATHSIG = 1
_START_TIMEOUT_S = 600.0  # a large model's load and warm-up, on a busy node
_context: ForkServerContext | None = None
_context_lock = threading.Lock()


class ModelCrashed(MServeError):  # noqa: N818 (reads like ModelNotReady)
    """The model's worker process ended while this request waited on it; the model loads again
    on its next request (a retry may succeed)."""

    status_code = 503

    def __init__(self, message: str, how: str = "") -> None:
        super().__init__(message)
        self.how = how
        """How the worker ended ("its worker process (pid N) was killed by SIGSEGV")."""


@dataclass(frozen=True)
class TensorArg:
    """What `OnnxModel` reads of onnxruntime's NodeArg: name, type ('tensor(float)'), shape."""

    name: str
    type: str
    shape: list[Any]


def _forkserver() -> ForkServerContext:
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["numpy", "onnxruntime", __name__])
            _context = context
        return _context


def _worker_main(path: str, name: str, version: str, config: SessionConfig, conn: Connection) -> None:
    """The worker: load, say what the model is, then run what arrives until told to stop."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adj:
        adj.write("1000")
    faulthandler.enable()  # a crash's stack goes to the pod's log (the worker's stderr)
    try:
        model = load_model(path, name, version, config)
    except Exception as exc:  # every load failure goes back to the server as its reason
        conn.send(("failed", str(exc)))
        return
    session = model.session
    conn.send(
        (
            "ready",
            [TensorArg(a.name, a.type, list(a.shape)) for a in session.get_inputs()],
            [TensorArg(a.name, a.type, list(a.shape)) for a in session.get_outputs()],
            session.get_providers(),
        )
    )
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        names, feed = message
        try:
            reply: tuple[Any, ...] = ("ok", session.run(names, feed))
        except _ORT_INPUT_ERRORS as exc:
            reply = ("ort", type(exc).__name__, str(exc))
        except Exception as exc:
            reply = ("error", type(exc).__name__, str(exc))
        conn.send(reply)


def _ort_error(kind: str, message: str) -> Exception:
    """The worker's onnxruntime error as the same class, so `OnnxModel.run` maps it as ever."""
    cls = getattr(ort.capi.onnxruntime_pybind11_state, kind, None)
    if isinstance(cls, type) and issubclass(cls, _ORT_INPUT_ERRORS):
        return cls(message)
    return RuntimeError(f"{kind}: {message}")


def _exit_text(process: BaseProcess) -> str:
    code = process.exitcode
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            signame = signal.Signals(-code).name
        except ValueError:
            signame = f"signal {-code}"
        hint = " (what the kernel's OOM killer sends at the pod's memory limit)" if code == -9 else ""
        return f"was killed by {signame}{hint}"
    return f"exited with status {code}"


class WorkerSession:
    """An onnxruntime session in a worker process, used like one in this process. One run at
    a time goes through the pipe; onnxruntime's intra-op threads in the worker do the work."""

    def __init__(self, name: str, process: BaseProcess, conn: Connection, ready: tuple[Any, ...]) -> None:
        self.name = name
        self.process = process
        self._conn = conn
        _, self._inputs, self._outputs, self._providers = ready
        self._lock = threading.Lock()
        self._ended: str | None = None

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def get_inputs(self) -> list[TensorArg]:
        return self._inputs

    def get_outputs(self) -> list[TensorArg]:
        return self._outputs

    def get_providers(self) -> list[str]:
        return self._providers

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            if self._ended is None:
                try:
                    self._conn.send((output_names, feed))
                    reply = self._conn.recv()
                except (EOFError, OSError):
                    self.process.join(timeout=5)
                    self._ended = _exit_text(self.process)
            if self._ended is not None:
                raise self.ended()
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "ort":
            raise _ort_error(reply[1], reply[2])
        raise RuntimeError(f"{reply[1]}: {reply[2]}")

    def gone(self) -> bool:
        """Whether the worker has ended, as seen without waiting: its end of the pipe closes
        when it exits (before anyone reaps it), so an idle pipe that reads as closed is a dead
        worker. A run in progress (the pipe busy) says False: that run will see the end."""
        if self._ended is not None:
            return True
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._conn.poll(0):
                self._conn.recv()  # nothing is due while idle: only the end can be read
        except (EOFError, OSError):
            self.process.join(timeout=5)
            self._ended = _exit_text(self.process)
        finally:
            self._lock.release()
        return self._ended is not None

    def ended(self) -> ModelCrashed:
        """The error for the worker's end (once it has ended)."""
        self._ended = self._ended or _exit_text(self.process)
        how = f"its worker process (pid {self.pid}) {self._ended}"
        return ModelCrashed(f"model '{self.name}' crashed: {how}; it loads again on its next request", how)

    def private_bytes(self) -> int:
        """The worker's own memory (not shared with the forkserver): what this model costs."""
        try:
            with open(f"/proc/{self.pid}/smaps_rollup") as rollup:
                fields = dict(line.split()[:2] for line in rollup if line.startswith("Private_"))
        except (OSError, ValueError):
            return 0
        return sum(int(kib) for kib in fields.values()) * 1024

    def close(self) -> None:
        """Stop the worker (it finishes a run in progress first); kill it if it does not go."""
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self._conn.close()


def start_worker(path: str, name: str, version: str, config: SessionConfig) -> WorkerSession:
    """Load `path` in a new worker process (blocking until it is warmed up); ModelLoadError
    with the reason if the model fails to load or the worker dies while loading it."""
    context = _forkserver()
    ours, theirs = context.Pipe()
    process = context.Process(
        target=_worker_main,
        args=(path, name, version, config, theirs),
        name=f"mserve-model-{name}",
        daemon=True,
    )
    process.start()
    theirs.close()
    try:
        if not ours.poll(_START_TIMEOUT_S):
            process.kill()
            raise ModelLoadError(f"its worker process did not finish loading in {_START_TIMEOUT_S:g} s")
        ready = ours.recv()
    except (EOFError, OSError):
        process.join(timeout=5)
        ours.close()
        raise ModelLoadError(f"its worker process {_exit_text(process)} while loading it") from None
    if ready[0] != "ready":
        process.join(timeout=5)
        ours.close()
        raise ModelLoadError(ready[1])
    return WorkerSession(name, process, ours, ready)
