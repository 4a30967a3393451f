"""Loading, eviction and unloading of a pool's models within its memory budget.

`ModelLoader` owns the loaded models (one `DataPlane` each) and the residency bookkeeping:
loads run one at a time on one loader thread, so that the memory a load adds is that load's;
to make room the least recently used idle model is unloaded; a model that fails to load is
UNAVAILABLE with the reason until its file changes. With `MSERVE_POOL_ISOLATION=process` a
model's session runs in a worker process (model_worker.py) and a worker that ends takes only
its model out: the next request loads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mserve_runtime.admission import Admission
from mserve_runtime.crash_report import CrashReport, frame_named
from mserve_runtime.dataplane import DataPlane
from mserve_runtime.errors import ModelNotReady
from mserve_runtime.inference_types import ModelMetadata
from mserve_runtime.metrics import RuntimeMetrics
from mserve_runtime.model_repository import RepositoryEntry
from mserve_runtime.model_residency import (
    ModelState,
    ModelUnavailable,
    NoRoom,
    Residency,
    held_bytes,
    release_freed_memory,
)
from mserve_runtime.model_worker import ModelCrashed, WorkerSession, start_worker
from mserve_runtime.onnx_model import OnnxModel
from mserve_runtime.output_bound import OutputBound
from mserve_runtime.pool_admission import ModelAdmissions
from mserve_runtime.pool_metrics import PoolMetrics
from mserve_runtime.pool_settings import PoolSettings
from mserve_runtime.settings import RuntimeSettings
from mserve_runtime.usage_metrics import UsageMetrics

log = logging.getLogger("mserve.pool")

CRASH_LIMIT = 3  # crashes of one model within CRASH_WINDOW_S that stop its reloads
CRASH_WINDOW_S = 300.0


class ModelLoader:
    """The pool's loaded models: load on demand, evict least recently used, unload."""

    def __init__(
        self,
        settings: RuntimeSettings,
        pool: PoolSettings,
        budget_bytes: int,
        metrics: RuntimeMetrics,
        usage: UsageMetrics,
        admissions: ModelAdmissions,
        crash_report: CrashReport | None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.metrics = metrics
        self.usage = usage
        self.admissions = admissions
        self.crash_report = crash_report
        self.residency = Residency(budget_bytes)
        self.pool_metrics = PoolMetrics(metrics.registry, budget_bytes, lambda: self.residency.used_bytes)
        self.planes: dict[str, DataPlane] = {}
        self.bounds: dict[str, OutputBound] = {}
        self.metadata: dict[str, ModelMetadata] = {}
        self.loaded_from: dict[str, tuple[int, int]] = {}  # the file (size, mtime) each plane loaded
        self._crashes: dict[str, deque[float]] = {}  # when each model's latest workers ended
        self._loads: dict[str, asyncio.Task[DataPlane]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._load_lock = asyncio.Lock()
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mserve-load")

    async def ensure_loaded(self, name: str, entry: RepositoryEntry) -> DataPlane:
        """The model's DataPlane once loaded: ModelUnavailable (409), or ModelNotReady (503)
        when its load takes longer than `MSERVE_POOL_LOAD_WAIT_S`."""
        plane = self.planes.get(name)
        if plane is not None:
            if (ended := _ended_worker(plane)) is None:
                return plane
            self.crashed(name, plane, ended.ended())  # while idle (the OOM killer's pick): load anew
        record = self.residency.record(name)
        if record.failed_for is not None and record.failed_for == _file_id(entry.path):
            raise ModelUnavailable(record.reason)
        task = self.start_load(name, entry)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.pool.load_wait_s)
        except TimeoutError:
            raise ModelNotReady(
                f"model '{name}' is still loading after {self.pool.load_wait_s:g} s "
                "(MSERVE_POOL_LOAD_WAIT_S); retry later"
            ) from None

    def start_load(self, name: str, entry: RepositoryEntry) -> asyncio.Task[DataPlane]:
        task = self._loads.get(name)
        if task is None:
            task = self._loads[name] = asyncio.get_running_loop().create_task(self.load(name, entry))
            task.add_done_callback(lambda t: self._load_done(name, t))
        return task

    def _load_done(self, name: str, task: asyncio.Task[DataPlane]) -> None:
        self._loads.pop(name, None)
        if not task.cancelled():
            task.exception()  # retrieved here: no waiter may be left to see it

    async def load(self, name: str, entry: RepositoryEntry) -> DataPlane:
        """Load `name` (after earlier loads finish), evicting idle models first to make room."""
        async with self._load_lock:
            if (plane := self.planes.get(name)) is not None:
                return plane
            budget = self.residency.budget_bytes
            need = self.residency.estimate(name, entry.size_bytes)
            if need > budget:
                reason = (
                    f"model '{name}' needs about {need} bytes, more than the pool's whole memory budget "
                    f"of {budget} bytes (MSERVE_POOL_MEMORY_BYTES)"
                )
                self.fail(name, reason, _file_id(entry.path))
                raise ModelUnavailable(reason)
            await self._make_room(name, need)
            self.residency.start_loading(name, need)
            self.set_state(name)
            settings = self.settings.model_copy(update={"model_name": name, "model_path": str(entry.path)})
            started = time.perf_counter()
            if self.crash_report is not None:
                self.crash_report.load(name)
            try:
                plane, grown = await asyncio.get_running_loop().run_in_executor(
                    self._loader, self._load_blocking, settings, self.admissions.of(name)
                )
            except Exception as exc:
                reason = f"model '{name}' failed to load: {exc}"
                log.warning("%s", reason)
                self.pool_metrics.load_failures.labels(name).inc()
                self.fail(name, reason, _file_id(entry.path))
                raise ModelUnavailable(reason) from None
            finally:
                if self.crash_report is not None:
                    self.crash_report.load(None)
            seconds = time.perf_counter() - started
            self.pool_metrics.load_seconds.labels(name).observe(seconds)
            footprint = max(entry.size_bytes, grown)
            self.residency.loaded(name, footprint)
            self.planes[name] = plane
            self.loaded_from[name] = (entry.size_bytes, entry.mtime_ns)
            assert plane.model is not None
            self.bounds[name] = OutputBound.of(plane.model.session)
            self.metadata[name] = plane.model_metadata(name)
            self.set_state(name)
            log.info("model '%s' loaded in %.3f s, %d bytes accounted", name, seconds, footprint)
            if footprint > budget:
                reason = (
                    f"model '{name}' took {footprint} bytes to load, more than the pool's whole memory "
                    f"budget of {budget} bytes (MSERVE_POOL_MEMORY_BYTES)"
                )
                await self.drop(name, ModelState.UNAVAILABLE, reason)
                self.fail(name, reason, _file_id(entry.path))
                raise ModelUnavailable(reason)
            # The estimate may have been short: unload idle models until the budget holds again.
            with contextlib.suppress(ModelNotReady):
                await self._make_room(name, 0)
            return plane

    def _load_blocking(self, settings: RuntimeSettings, admission: Admission) -> tuple[DataPlane, int]:
        before = held_bytes()
        plane = DataPlane(settings, self.metrics, self.usage, admission)
        if self.pool.isolation == "process":
            session = start_worker(
                settings.model_path, settings.model_name, settings.model_version, plane.session_config
            )
            try:
                plane.attach(OnnxModel(settings.model_name, settings.model_version, session))
            except Exception:
                session.close()
                raise
            log.info("model '%s' runs in worker process %d", settings.model_name, session.pid)
            return plane, held_bytes() - before + session.private_bytes()
        plane.load()
        assert plane.model is not None
        # A crash inside a run then names the model in the stack the crash report holds.
        plane.model.run = frame_named(plane.model.run, f"model '{settings.model_name}'")  # type: ignore[method-assign]
        return plane, held_bytes() - before

    async def _make_room(self, name: str, need: int) -> None:
        try:
            victims = self.residency.victims(need, keep=name)
        except NoRoom as exc:
            if not exc.busy:  # only `name` itself is left: it alone is over the budget (caught above)
                return
            raise ModelNotReady(
                f"no memory for model '{name}' now: the budget ({self.residency.budget_bytes} bytes) "
                f"is held by models serving requests ({', '.join(exc.busy)}); retry later"
            ) from None
        # Every victim leaves the table before the first close awaits: none can be taken meanwhile.
        planes = [self.take_out(v, ModelState.EVICTED, f"evicted to make room for '{name}'") for v in victims]
        for victim, plane in zip(victims, planes, strict=True):
            log.info("evicted model '%s' (least recently used) to make room for '%s'", victim, name)
            self.pool_metrics.evictions.labels(victim).inc()
            if plane is not None:
                await self.close_plane(plane)

    async def unload(self, name: str) -> None:
        """Unload now (unloaded already is fine); ModelNotReady while requests hold it."""
        record = self.residency.record(name)
        async with self._load_lock:
            if record.active:
                raise ModelNotReady(f"model '{name}' has {record.active} requests in flight; retry later")
            if name in self.planes:
                await self.drop(name, ModelState.UNAVAILABLE, "unloaded on request")

    async def drop(self, name: str, state: ModelState, reason: str) -> None:
        plane = self.take_out(name, state, reason)
        if plane is not None:
            await self.close_plane(plane)

    def take_out(self, name: str, state: ModelState, reason: str) -> DataPlane | None:
        plane = self.planes.pop(name, None)
        self.residency.unloaded(name, state, reason)
        self.set_state(name)
        return plane

    def fail(self, name: str, reason: str, file_id: tuple[int, int] | None) -> None:
        self.residency.failed(name, reason, file_id)
        self.set_state(name)

    def set_state(self, name: str) -> None:
        record = self.residency.record(name)
        self.pool_metrics.set_state(name, record.state, record.footprint_bytes)

    async def close_plane(self, plane: DataPlane) -> None:
        """Stop the model's runs, then free its session now: its worker process ends, or (in
        this process) the session is dropped and the allocator's freed pages are returned."""
        await plane.close()
        model, plane.model = plane.model, None
        if model is None:
            return
        if isinstance(model.session, WorkerSession):
            await asyncio.get_running_loop().run_in_executor(None, model.session.close)
            return
        # `run` wrapped by frame_named refers back to the model: a cycle only the cyclic
        # collector would break, holding the session (its weights) until then.
        vars(model).pop("run", None)
        del model
        await asyncio.get_running_loop().run_in_executor(self._loader, release_freed_memory)

    def close_later(self, plane: DataPlane) -> None:
        task = asyncio.get_running_loop().create_task(self.close_plane(plane))
        self._closing.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._closing.discard)

    def crashed(self, name: str, plane: DataPlane, exc: ModelCrashed) -> None:
        """The model's worker process ended: take the model out (once, by the first request
        to see it); its next request loads it again in a new worker, unless it crashed
        CRASH_LIMIT times within CRASH_WINDOW_S: then it stays UNAVAILABLE (409) until its
        file changes, so that a model crashing on every run does not cost the pool a load each."""
        if self.planes.get(name) is not plane:
            return
        log.error("%s", exc.message)
        self.pool_metrics.crashes.labels(name).inc()
        self.take_out(name, ModelState.UNAVAILABLE, exc.message)
        self.close_later(plane)
        now = time.monotonic()
        recent = self._crashes.setdefault(name, deque(maxlen=CRASH_LIMIT))
        recent.append(now)
        if len(recent) == CRASH_LIMIT and now - recent[0] <= CRASH_WINDOW_S:
            reason = (
                f"model '{name}' crashed {CRASH_LIMIT} times in {now - recent[0]:.0f} s (the last time "
                f"{exc.how}); it is not loaded again until its file changes"
            )
            log.error("%s", reason)
            self.fail(name, reason, self.loaded_from.get(name))
            recent.clear()

    async def close(self) -> None:
        for task in self._loads.values():
            task.cancel()
        for name in list(self.planes):
            await self.close_plane(self.planes.pop(name))
        for task in list(self._closing):
            await task
        self._loader.shutdown(wait=True, cancel_futures=True)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _ended_worker(plane: DataPlane) -> WorkerSession | None:
    """The model's worker process, if it has one and it has ended."""
    session = plane.model.session if plane.model is not None else None
    if isinstance(session, WorkerSession) and session.gone():
        return session
    return None
