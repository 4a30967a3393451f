"""Prometheus metrics of the operator process."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "mserve_operator_reconciles_total", "Reconciles of ModelServices, by result.", ["result"]
)
RECONCILE_ERRORS = Counter(
    "mserve_operator_reconcile_errors_total", "Reconciles that raised, by exception type.", ["error"]
)
RECONCILE_SECONDS = Histogram(
    "mserve_operator_reconcile_duration_seconds",
    "Time one reconcile took, API calls included.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOBS_CREATED = Counter(
    "mserve_operator_optimization_jobs_created_total", "Optimization Jobs the operator created."
)
MODELSERVICES = Gauge(
    "mserve_operator_modelservices", "ModelServices this replica reconciles, by phase.", ["phase"]
)


def serve(port: int) -> None:
    if port:
        start_http_server(port)


# Per ModelService this replica meters (usage_meter.py); a series goes when its figure or its
# ModelService does, so the label sets are the existing ModelServices only.
_USAGE_LABELS = ["namespace", "modelservice"]
USAGE_REQUESTS_PER_SECOND = Gauge(
    "mserve_operator_usage_requests_per_second",
    "Requests/s a ModelService's runtime pods answered over the usage window.",
    _USAGE_LABELS,
)
USAGE_HOURLY_COST = Gauge(
    "mserve_operator_usage_hourly_cost",
    "Price per hour of a ModelService's runtime pods' resource requests (the chart's usage.prices).",
    _USAGE_LABELS,
)
USAGE_COST_PER_1K = Gauge(
    "mserve_operator_usage_cost_per_1k_inferences",
    "Hourly cost / successful inferences per hour x 1000, over the usage window.",
    _USAGE_LABELS,
)


def set_usage(
    namespace: str, name: str, requests_per_second: float | None, hourly: float | None, per_1k: float | None
) -> None:
    for gauge, value in (
        (USAGE_REQUESTS_PER_SECOND, requests_per_second),
        (USAGE_HOURLY_COST, hourly),
        (USAGE_COST_PER_1K, per_1k),
    ):
        if value is None:
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        else:
            gauge.labels(namespace, name).set(value)
