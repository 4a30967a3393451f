"""Usage metering: per model and caller, requests, rows, compute seconds and bytes in and out.

The protocol hooks (access_middleware.py, grpc_v2/access.py) give each admitted inference
request a `Usage` through a context variable; the data plane adds the rows it ran and the
model time they took (a merged batch's time shared by rows); the hook records it with the
bytes it counted. Totals are plain floats added on the event loop and turned into counters
only when scraped: a handful of additions per request instead of five locked counters.

Label values are a closed set: a caller is a key name, `sa:namespace/name` of an allowed
ServiceAccount, or `anonymous` (never a credential, never an unknown caller); a model is the
served one or `_unknown`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from mserve_runtime.metrics import UNKNOWN_MODEL


@dataclass(slots=True)
class Usage:
    """What one request used of the model (added to by the data plane, maybe on a worker thread)."""

    rows: int = 0
    compute_s: float = 0.0
    forwarded: bool = False
    """Answered by a canary (canary_forward.py), which meters it: not recorded here."""


current_usage: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("mserve_usage", default=None)

_FAMILIES = (
    ("mserve_usage_requests", "Inference requests answered, by model and caller."),
    ("mserve_usage_rows", "Batch rows (first dimension) run by the model, by model and caller."),
    ("mserve_usage_compute_seconds", "Model run time attributed to the caller (a merged batch by rows)."),
    ("mserve_usage_request_bytes", "Request bytes received (bodies, or gRPC messages), by model and caller."),
    ("mserve_usage_response_bytes", "Response bytes sent (bodies, or gRPC messages), by model and caller."),
)


class UsageMetrics(Collector):
    """Usage totals per (model, caller), exported as the five `mserve_usage_*_total` counters."""

    def __init__(self, registry: CollectorRegistry, models: set[str]) -> None:
        self.models = models  # the served model names (shared with RuntimeMetrics)
        self._totals: dict[tuple[str, str], list[float]] = {}
        registry.register(self)

    def record(self, model: str, caller: str, usage: Usage, request_bytes: int, response_bytes: int) -> None:
        key = (model if model in self.models else UNKNOWN_MODEL, caller)
        totals = self._totals.get(key)
        if totals is None:
            totals = self._totals[key] = [0.0, 0.0, 0.0, 0.0, 0.0]
        totals[0] += 1
        totals[1] += usage.rows
        totals[2] += usage.compute_s
        totals[3] += request_bytes
        totals[4] += response_bytes

    def collect(self) -> Iterator[CounterMetricFamily]:
        snapshot = [(key, list(values)) for key, values in list(self._totals.items())]
        for index, (name, documentation) in enumerate(_FAMILIES):
            family = CounterMetricFamily(name, documentation, labels=["model", "caller"])
            for (model, caller), values in snapshot:
                family.add_metric([model, caller], values[index])
            yield family
