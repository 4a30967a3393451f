"""The protocol-agnostic core: model lookup, health, metadata and inference.

REST and gRPC adapters decode their wire formats into `inference_types`, call this, and
encode what it returns. Nothing here knows about HTTP or protobuf.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from mserve_runtime.admission import (
    Admission,
    RequestScope,
    adaptive_floor,
    current_scope,
    default_max_in_flight,
    delay_floor,
    latency_tolerance,
    queue_wait_bound,
)
from mserve_runtime.batching import DynamicBatcher
from mserve_runtime.concurrency_limit import GradientLimit
from mserve_runtime.cpu_limit import concurrent_runs
from mserve_runtime.datatypes import numpy_to_v2
from mserve_runtime.errors import ModelNotFound, ModelNotReady
from mserve_runtime.inference_types import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    OutputTensor,
    ServerMetadata,
)
from mserve_runtime.metrics import RuntimeMetrics
from mserve_runtime.onnx_model import OnnxModel, load_model, rows_of, session_config
from mserve_runtime.settings import RuntimeSettings
from mserve_runtime.usage_metrics import Usage, UsageMetrics, current_usage

log = logging.getLogger("mserve.dataplane")

SERVER_NAME = "mserve"
EXTENSIONS = ["binary_tensor_data"]


def server_version() -> str:
    try:
        return version("mserve")
    except PackageNotFoundError:
        return "0.0.0"


def _quoted(name: str, limit: int = 100) -> str:
    """A client's name for an error message, cut short: the message must stay small (gRPC
    carries it in a header) however long the name."""
    return f"'{name}'" if len(name) <= limit else f"'{name[:limit]}...' ({len(name)} characters)"


class DataPlane:
    """Serves one model (by name and version) with optional dynamic batching."""

    def __init__(
        self,
        settings: RuntimeSettings,
        metrics: RuntimeMetrics | None = None,
        usage: UsageMetrics | None = None,
        admission: Admission | None = None,
    ) -> None:
        """`admission`: one the caller keeps (a pool's per-model one); else built from `settings`."""
        self.settings = settings
        self.metrics = metrics or RuntimeMetrics()
        # A pool's models share one registry, so they share its usage counters too.
        self.usage = usage or UsageMetrics(self.metrics.registry, self.metrics.models)
        self.session_config = session_config(settings)
        self.threads = self.session_config.threads
        # Each run already uses `threads` cores; more concurrent runs than cores/threads only
        # adds contention. Requests beyond that wait in the executor's queue (or the batcher),
        # which hold at most `max_in_flight`: every request there holds an admission slot.
        self.workers = concurrent_runs(self.threads) if settings.device == "cpu" else 1
        self.max_in_flight = settings.max_in_flight or default_max_in_flight(
            self.workers, settings.max_batch_size
        )
        batch_delay_s = settings.max_batch_delay_ms / 1000 if settings.max_batch_size > 1 else 0.0
        adaptive = None
        self.latency_tolerance = latency_tolerance(settings.latency_tolerance, settings.max_batch_size > 1)
        if self.latency_tolerance:
            adaptive = GradientLimit(
                adaptive_floor(self.workers, self.max_in_flight),
                self.max_in_flight,
                self.latency_tolerance,
                settings.latency_slack_ms / 1000 + batch_delay_s,
            )
        self.admission = admission or Admission(
            self.max_in_flight,
            delay_floor(self.workers, settings.max_batch_size),
            queue_wait_bound(settings.max_queue_delay_ms, batch_delay_s),
            adaptive,
        )
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="mserve-infer")
        self.model: OnnxModel | None = None
        self.batcher: DynamicBatcher | None = None
        self.draining = False
        self._server_metadata = ServerMetadata(SERVER_NAME, server_version(), EXTENSIONS)
        self.metrics.serve(settings.model_name)
        # A plain counter read at scrape time: cheaper than two locked gauge updates per request.
        self.metrics.in_flight.labels(settings.model_name).set_function(lambda: self.admission.in_flight)
        self.metrics.in_flight_limit.labels(settings.model_name).set_function(lambda: self.admission.limit)
        self._batch_size = self.metrics.batch_size.labels(settings.model_name)
        self._dropped = {
            reason: self.metrics.dropped.labels(settings.model_name, reason)
            for reason in ("deadline", "client_gone")
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self) -> OnnxModel:
        """Load and warm up the model (blocking); raises ModelLoadError with the reason."""
        s = self.settings
        model = load_model(s.model_path, s.model_name, s.model_version, self.session_config)
        self.attach(model)
        return model

    def attach(self, model: OnnxModel) -> None:
        """Serve `model`; from now on the server is ready (unless draining)."""
        s = self.settings
        if s.max_batch_size > 1 and not model.batchable:
            log.warning("dynamic batching off: %s", model.why_not_batchable())
        elif s.max_batch_size > 1:
            self.batcher = DynamicBatcher(
                self._run_all_outputs,
                s.max_batch_size,
                s.max_batch_delay_ms / 1000,
                self.metrics,
                model.name,
                max_queued=self.max_in_flight,
                concurrency=self.workers,
                on_wait=self.admission.observe_wait,
                on_done=self.admission.observe_run,
            )
            log.info(
                "dynamic batching on: max %d rows, max delay %.1f ms", s.max_batch_size, s.max_batch_delay_ms
            )
        self.model = model

    def start_draining(self) -> None:
        """Turn not-ready (so the Service stops routing here) while in-flight requests finish."""
        if not self.draining:
            log.info("draining: ready is now false; in-flight requests will finish")
        self.draining = True

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        self._executor.shutdown(wait=True, cancel_futures=False)

    # -- health and metadata -----------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.model is not None and not self.draining

    def server_metadata(self) -> ServerMetadata:
        return self._server_metadata

    def _lookup(self, name: str, version: str | None) -> OnnxModel:
        if name != self.settings.model_name:
            raise ModelNotFound(
                f"model {_quoted(name)} is not served here (this server serves '{self.settings.model_name}')"
            )
        if version not in (None, "", self.settings.model_version):
            raise ModelNotFound(
                f"model '{name}' has no version {_quoted(version)} (available: {self.settings.model_version})"
            )
        if self.model is None:
            raise ModelNotReady(f"model '{name}' is still loading")
        return self.model

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """False while loading or draining; ModelNotFound for a model not served here."""
        try:
            self._lookup(name, version)
        except ModelNotReady:
            return False
        return not self.draining

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        model = self._lookup(name, version)
        return ModelMetadata(model.name, [model.version], model.platform, model.inputs, model.outputs)

    # -- inference ---------------------------------------------------------------------------

    async def infer(
        self, name: str, request: InferenceRequest, version: str | None = None
    ) -> InferenceResponse:
        model = self._lookup(name, version)
        feed = model.check_inputs(request.inputs)
        names = [o.name for o in request.outputs] if request.outputs else model.output_names
        model.check_outputs(names)
        usage = current_usage.get()
        if self.batcher is not None:
            everything = await self._wait(self.batcher.enqueue(feed, usage))
            arrays = [everything[model.output_names.index(n)] for n in names]
        else:
            loop = asyncio.get_running_loop()
            queued = time.perf_counter()
            arrays = await self._wait(
                loop.run_in_executor(self._executor, self._run_now, model, feed, names, queued, usage, loop)
            )
        outputs = [
            OutputTensor(n, numpy_to_v2(a.dtype), list(a.shape), a)
            for n, a in zip(names, arrays, strict=True)
        ]
        return InferenceResponse(model.name, model.version, request.id, outputs, {})

    async def _wait(self, work: asyncio.Future[list[np.ndarray]]) -> list[np.ndarray]:
        """Await queued work; drop it (504, or 499 for a client gone) if the request's scope ends first."""
        scope: RequestScope | None = current_scope.get()
        if scope is None:
            return await work
        self.admission.queue(scope, work)
        try:
            return await work
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if scope.reason is None or (task is not None and task.cancelling()):
                # The caller itself was cancelled (a gRPC client cancelled, or shutdown).
                self._dropped["client_gone"].inc()
                raise
            self._dropped[scope.reason].inc()
            raise scope.error() from None
        finally:
            self.admission.unqueue(scope)

    def _run_now(
        self,
        model: OnnxModel,
        feed: dict[str, np.ndarray],
        names: list[str],
        queued: float,
        usage: Usage | None,
        loop: asyncio.AbstractEventLoop,
    ) -> list[np.ndarray]:
        """In an inference thread, when the work's turn comes (cancelled work never gets here)."""
        started = time.perf_counter()
        self.admission.observe_wait(started - queued)
        rows = rows_of(feed) if feed else 1
        self._batch_size.observe(rows)
        outputs = model.run(feed, names)
        if usage is not None:
            usage.rows += rows
            usage.compute_s += time.perf_counter() - started
        if self.admission.adaptive is not None:
            # Measured here, not when the event loop gets to the answer: that lag is HTTP work,
            # which admitting fewer requests does not shorten. Counted on the loop (one thread).
            loop.call_soon_threadsafe(self.admission.observe_run, time.perf_counter() - queued)
        return outputs

    async def _run_all_outputs(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert self.model is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.model.run, feed, None)
