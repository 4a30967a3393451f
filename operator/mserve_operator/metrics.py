"""Prometheus metrics of the operator process."""

from __future__ import annotations

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
