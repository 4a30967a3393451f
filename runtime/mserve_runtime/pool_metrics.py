"""Per-model residency metrics of a pool server, on the runtime's registry.

Model label values are the names in the repository listing (validated, bounded by what the
directory holds); a request for any other name is counted as `_unknown` by RuntimeMetrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mserve_runtime.model_residency import ModelState

_LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class PoolMetrics:
    """mserve_model_loaded/state/memory/load seconds/evictions, and the pool's memory."""

    def __init__(
        self, registry: CollectorRegistry, budget_bytes: int, used_bytes: Callable[[], float]
    ) -> None:
        self.loaded = Gauge(
            "mserve_model_loaded",
            "1 while the model is loaded and serving, else 0.",
            ["model"],
            registry=registry,
        )
        self.state = Gauge(
            "mserve_model_state",
            "1 for the model's current state (UNAVAILABLE, LOADING, READY, EVICTED), 0 for the others.",
            ["model", "state"],
            registry=registry,
        )
        self.memory = Gauge(
            "mserve_model_memory_bytes",
            "Memory accounted to the model while loaded: max(file size, RSS growth during its load).",
            ["model"],
            registry=registry,
        )
        self.load_seconds = Histogram(
            "mserve_model_load_seconds",
            "Time to load and warm up the model (not counting the wait for an earlier load).",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=registry,
        )
        self.evictions = Counter(
            "mserve_model_evictions", "Unloads to make room for another model.", ["model"], registry=registry
        )
        self.load_failures = Counter(
            "mserve_model_load_failures",
            "Loads that failed (bad file, warm-up error).",
            ["model"],
            registry=registry,
        )
        self.crashes = Counter(
            "mserve_model_crashes",
            "Worker processes of the model that ended while it was loaded (MSERVE_POOL_ISOLATION=process).",
            ["model"],
            registry=registry,
        )
        budget = Gauge(
            "mserve_pool_memory_budget_bytes", "MSERVE_POOL_MEMORY_BYTES in effect.", registry=registry
        )
        budget.set(budget_bytes)
        used = Gauge(
            "mserve_pool_memory_used_bytes",
            "Memory accounted to loaded and loading models.",
            registry=registry,
        )
        used.set_function(used_bytes)

    def unlist(self, model: str) -> None:
        """A model whose file left the repository: no state series (counters stay)."""
        for each in ModelState:
            with contextlib.suppress(KeyError):
                self.state.remove(model, each.value)
        for gauge in (self.loaded, self.memory):
            with contextlib.suppress(KeyError):
                gauge.remove(model)

    def set_state(self, model: str, state: ModelState, memory_bytes: int) -> None:
        for each in ModelState:
            self.state.labels(model, each.value).set(1 if each is state else 0)
        self.loaded.labels(model).set(1 if state is ModelState.READY else 0)
        self.memory.labels(model).set(memory_bytes if state is ModelState.READY else 0)
