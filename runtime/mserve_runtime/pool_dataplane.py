"""The data plane of a pool server: many models, each served by its own `DataPlane`.

It answers the same calls as `DataPlane` (so the REST and gRPC adapters serve it
unchanged) and adds the V2 model repository extension (index, load, unload). A model loads
on its first request (or at start-up, `MSERVE_POOL_PRELOAD`), one load at a time; to make
room the least recently used idle model is unloaded. Requests for a loading model wait up
to `MSERVE_POOL_LOAD_WAIT_S`, then get 503 naming it. A model that fails to load is marked
UNAVAILABLE with the reason (409) and the others keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mserve_runtime.admission import Admission, default_max_in_flight, queue_wait_bound
from mserve_runtime.cpu_limit import concurrent_runs
from mserve_runtime.crash_report import CrashReport
from mserve_runtime.dataplane import EXTENSIONS, SERVER_NAME, DataPlane, _quoted, server_version
from mserve_runtime.errors import ModelLoadError, ModelNotFound, ModelNotReady
from mserve_runtime.inference_types import InferenceRequest, InferenceResponse, ModelMetadata, ServerMetadata
from mserve_runtime.memory_limit import available_memory
from mserve_runtime.metrics import RuntimeMetrics
from mserve_runtime.model_repository import (
    RepositoryEntry,
    RepositoryError,
    list_repository,
    valid_model_name,
)
from mserve_runtime.model_residency import ModelState, ModelUnavailable
from mserve_runtime.model_worker import ModelCrashed
from mserve_runtime.onnx_model import session_config
from mserve_runtime.pool_admission import ModelAdmissions, model_cap
from mserve_runtime.pool_loading import ModelLoader
from mserve_runtime.pool_settings import PoolSettings
from mserve_runtime.request_limits import RequestLimits
from mserve_runtime.settings import RuntimeSettings
from mserve_runtime.usage_metrics import UsageMetrics

log = logging.getLogger("mserve.pool")


class PoolDataPlane:
    """Serves every model of a repository directory within one memory budget."""

    def __init__(
        self,
        settings: RuntimeSettings,
        pool: PoolSettings,
        metrics: RuntimeMetrics | None = None,
        crash_report: CrashReport | None = None,
    ) -> None:
        self.settings = settings
        self.crash_report = crash_report
        self.pool = pool
        self.directory = Path(pool.dir)
        self.metrics = metrics or RuntimeMetrics()
        self.usage = UsageMetrics(self.metrics.registry, self.metrics.models)
        self.threads = session_config(settings).threads
        self.workers = concurrent_runs(self.threads) if settings.device == "cpu" else 1
        self.max_in_flight = settings.max_in_flight or default_max_in_flight(
            self.workers, settings.max_batch_size
        )
        # One cap on requests for the whole process, and one per model within it (pool_admission.py).
        self.admission = Admission(self.max_in_flight)
        batch_delay_s = settings.max_batch_delay_ms / 1000 if settings.max_batch_size > 1 else 0.0
        self.admissions = ModelAdmissions(
            model_cap(pool.model_max_in_flight, self.max_in_flight),
            max(1, self.workers * settings.max_batch_size),
            queue_wait_bound(settings.max_queue_delay_ms, batch_delay_s),
            self.listed,
            lambda name, protocol: self.metrics.shed.labels(name, protocol).inc(),
            crash_report.busy if crash_report is not None else None,
        )
        self.loader = ModelLoader(
            settings,
            pool,
            pool.memory_bytes or available_memory() // 2,
            self.metrics,
            self.usage,
            self.admissions,
            crash_report,
        )
        self.residency = self.loader.residency
        self.planes = self.loader.planes
        self.entries: dict[str, RepositoryEntry] = {}
        self.max_elements = RequestLimits.from_settings(settings).max_elements
        self._scanned_at = -float("inf")
        self._rescans: asyncio.Task[None] | None = None
        self._unlisted: set[str] = set()  # known models whose file left the directory
        self._started = False
        self.draining = False
        self._server_metadata = ServerMetadata(
            SERVER_NAME, server_version(), [*EXTENSIONS, "model_repository"]
        )

    # -- the repository ----------------------------------------------------------------------

    def scan(self) -> dict[str, RepositoryEntry]:
        """Re-read the directory (RepositoryError if it cannot be listed)."""
        self.entries = list_repository(self.directory)
        self._scanned_at = time.monotonic()
        for name in self.entries:
            if name in self._unlisted:  # back in the repository
                self._unlisted.discard(name)
                self.loader.set_state(name)
            if name not in self.residency.records:
                self.metrics.serve(name)
                record = self.residency.record(name)
                self.loader.pool_metrics.set_state(name, record.state, 0)
                # Requests holding one of the model's slots (pool_admission.py): read, loading, queued, run.
                admission = self.admissions.of(name)
                self.metrics.in_flight.labels(name).set_function(lambda a=admission: a.in_flight)
        for name in [n for n in self.planes if n not in self.entries or self._replaced(n)]:
            if self.residency.record(name).active == 0:  # one in use goes later, as an LRU victim
                why = "replaced in the repository" if name in self.entries else "removed from the repository"
                plane = self.loader.take_out(name, ModelState.UNAVAILABLE, why)
                if plane is not None:
                    self.loader.close_later(plane)
        for name in [n for n in self.residency.records if n not in self.entries and n not in self.planes]:
            if name not in self._unlisted:  # /metrics lists only what the directory holds
                self.loader.pool_metrics.unlist(name)
                self._unlisted.add(name)
        return self.entries

    def _replaced(self, name: str) -> bool:
        entry = self.entries[name]
        loaded_from = self.loader.loaded_from.get(name, (entry.size_bytes, entry.mtime_ns))
        return loaded_from != (entry.size_bytes, entry.mtime_ns)

    async def _rescan_every(self, interval_s: float) -> None:
        """Files arrive while the server runs (a pool pod's sync sidecar): list them in /metrics
        within a second, loaded ones replaced or removed unloaded, without waiting for a request."""
        while True:
            await asyncio.sleep(interval_s)
            with contextlib.suppress(RepositoryError):
                self.scan()

    def _entry(self, name: str) -> RepositoryEntry:
        entry = self.entries.get(name)
        stale = time.monotonic() - self._scanned_at >= self.pool.rescan_interval_s
        if entry is None and stale and valid_model_name(name):
            with contextlib.suppress(RepositoryError):
                entry = self.scan().get(name)
        if entry is None:
            raise ModelNotFound(f"model {_quoted(name)} is not in the model repository")
        return entry

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """The V2 repository index: name, version, state, reason (and the memory accounted)."""
        self.scan()
        rows = []
        for name in sorted(self.entries):
            record = self.residency.record(name)
            if ready_only and record.state is not ModelState.READY:
                continue
            memory = record.footprint_bytes if record.state is ModelState.READY else 0
            rows.append(
                {
                    "name": name,
                    "version": self.settings.model_version,
                    "state": record.state.value,
                    "reason": record.reason,
                    "memory_bytes": memory,
                }
            )
        return rows

    # -- lifecycle ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Start-up: list the repository and load the models to preload (ModelLoadError if the
        directory cannot be listed or names a preload it does not hold)."""
        try:
            self.scan()
        except RepositoryError as exc:
            raise ModelLoadError(str(exc)) from exc
        wanted = self.pool.preload_names()
        if wanted is not None and (missing := [n for n in wanted if n not in self.entries]):
            raise ModelLoadError(
                f"MSERVE_POOL_PRELOAD names models not in {self.directory}: {', '.join(missing)}"
            )
        log.info(
            "model repository %s: %d models, memory budget %d bytes",
            self.directory,
            len(self.entries),
            self.residency.budget_bytes,
        )
        for name in sorted(self.entries) if wanted is None else wanted:
            entry = self.entries[name]
            if wanted is None and self.residency.used_bytes + entry.size_bytes > self.residency.budget_bytes:
                break  # `*` loads what fits, and evicts nothing for it
            try:
                await self.loader.load(name, entry)
            except (ModelUnavailable, ModelNotReady) as exc:
                log.warning("preload of '%s' failed: %s", name, exc.message)
        self._rescans = asyncio.get_running_loop().create_task(
            self._rescan_every(self.pool.rescan_interval_s or 1.0)
        )
        self._started = True

    def start_draining(self) -> None:
        self.draining = True
        for plane in self.planes.values():
            plane.start_draining()

    async def close(self) -> None:
        if self._rescans is not None:
            self._rescans.cancel()
        await self.loader.close()

    # -- health and metadata -----------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self._started and not self.draining

    def server_metadata(self) -> ServerMetadata:
        return self._server_metadata

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self._entry(name)
        plane = self.planes.get(name)
        return plane is not None and plane.model_ready(name, version)

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        """From the loaded model, or remembered from its last load; else its load starts and
        ModelNotReady says to retry (REST awaits the load before calling this: pool_routes.py)."""
        self._entry(name)
        plane = self.planes.get(name)
        if plane is not None and plane.model is not None:
            return plane.model_metadata(name, version)
        if name in self.loader.metadata and version in (None, "", self.settings.model_version):
            return self.loader.metadata[name]
        self.loader.start_load(name, self._entry(name))
        raise ModelNotReady(f"model '{name}' is loading; retry")

    # -- inference ---------------------------------------------------------------------------

    async def infer(
        self, name: str, request: InferenceRequest, version: str | None = None
    ) -> InferenceResponse:
        self._entry(name)
        with self.admissions.holding(name):
            async with self.holding(name) as plane:
                shapes = {tensor.name: tensor.shape for tensor in request.inputs}
                self.loader.bounds[name].check(name, shapes, self.max_elements)
                try:
                    return await plane.infer(name, request, version)
                except ModelCrashed as exc:
                    self.loader.crashed(name, plane, exc)
                    raise

    def listed(self, name: str) -> bool:
        """Whether the repository's listing (as last read) holds `name`."""
        return name in self.entries

    @contextlib.asynccontextmanager
    async def holding(self, name: str) -> AsyncIterator[DataPlane]:
        """The model's DataPlane, loaded (waiting for it if need be) and kept from eviction
        for the block."""
        if self.draining:
            raise ModelNotReady("the server is shutting down")
        plane = await self.loader.ensure_loaded(name, self._entry(name))
        for _ in range(3):
            if self.planes.get(name) is plane:
                break
            # Loaded, then evicted for another model before this waiter resumed: load again.
            plane = await self.loader.ensure_loaded(name, self._entry(name))
        else:
            raise ModelNotReady(
                f"model '{name}' was evicted as soon as it loaded (pool too busy); retry later"
            )
        record = self.residency.record(name)
        record.active += 1
        self.residency.touch(name)
        try:
            yield plane
        finally:
            record.active -= 1

    # -- the repository extension: explicit load and unload ----------------------------------

    async def ensure_loaded(self, name: str) -> DataPlane:
        """The model's DataPlane once loaded: ModelNotFound, ModelUnavailable (409), or
        ModelNotReady (503) when its load takes longer than `MSERVE_POOL_LOAD_WAIT_S`."""
        return await self.loader.ensure_loaded(name, self._entry(name))

    async def load_model(self, name: str) -> None:
        """POST /v2/repository/models/<name>/load: load now (or already loaded)."""
        await self.ensure_loaded(name)

    async def unload_model(self, name: str) -> None:
        """POST /v2/repository/models/<name>/unload: unload now (unloaded already is fine);
        503 while requests hold it. A later request loads it again."""
        self._entry(name)
        await self.loader.unload(name)
