"""Prometheus metrics of the runtime, on a registry of its own (one per server instance).

Every label value comes from a closed set, so that no request can mint new series: model
names are the served ones or `_unknown`, protocols are fixed, statuses are HTTP status
codes or gRPC status code names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
UNKNOWN_MODEL = "_unknown"
PROTOCOLS = frozenset({"rest", "rest_v1", "grpc"})
_GRPC_CODES = frozenset(
    {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)


class RuntimeMetrics:
    """Request counts/latency per protocol, batch sizes, queue wait and requests in flight."""

    def __init__(
        self, registry: CollectorRegistry | None = None, models: frozenset[str] = frozenset()
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.models = set(models)
        self.requests = Counter(
            "mserve_requests",
            "Inference requests answered, by model, protocol and status.",
            ["model", "protocol", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mserve_request_duration_seconds",
            "Time from request received to response ready, by model and protocol.",
            ["model", "protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mserve_batch_size",
            "Rows per model run (1 per request when batching is off).",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "mserve_queue_wait_seconds",
            "Time a request waited for its batch to start running.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "mserve_requests_in_flight",
            "Inference requests being processed.",
            ["model"],
            registry=self.registry,
        )
        self.in_flight_limit = Gauge(
            "mserve_requests_in_flight_limit",
            "Inference requests admitted at most now (max_in_flight, or below it the adaptive limit).",
            ["model"],
            registry=self.registry,
        )
        self.shed = Counter(
            "mserve_requests_shed",
            "Inference requests refused at once (503 / UNAVAILABLE) because max_in_flight were in flight.",
            ["model", "protocol"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "mserve_requests_dropped",
            "Admitted requests whose queued work was dropped unrun: deadline passed or client gone.",
            ["model", "reason"],
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, str, str], Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def serve(self, model: str) -> None:
        """Count requests for `model` under its own name from now on."""
        self.models.add(model)

    def observe_request(self, model: str, protocol: str, status: str, seconds: float) -> None:
        """Count one answered inference request; `status` is the HTTP status or gRPC code name.

        A model not served is counted as `_unknown`, a status outside the closed set as `other`.
        """
        model = model if model in self.models else UNKNOWN_MODEL
        if not (status in _GRPC_CODES or (len(status) == 3 and status.isdigit())):
            status = "other"
        key = (model, protocol, status)
        counter = self._request_children.get(key)
        if counter is None:
            if protocol not in PROTOCOLS:
                raise ValueError(f"unknown protocol label {protocol!r}")
            counter = self._request_children[key] = self.requests.labels(model, protocol, status)
        counter.inc()
        lkey = (model, protocol)
        histogram = self._latency_children.get(lkey)
        if histogram is None:
            histogram = self._latency_children[lkey] = self.latency.labels(model, protocol)
        histogram.observe(seconds)
