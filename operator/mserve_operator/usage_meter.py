"""`status.usage` of each ModelService, from its runtime pods' own metrics.

Every `usage_interval_seconds` the operator reads `/metrics` on each running runtime pod's
admin port (the runtime NetworkPolicy lets the operator's pods in, see the chart's
`usage.enabled`), keeps the counts in a `UsageWindow` and writes requests/s, error rate, p99
and the cost per 1,000 inferences to `status.usage`, and the same figures as operator metrics.
No Prometheus is needed; with one, the same figures are PromQL over the runtime's metrics
(the chart's Grafana dashboard).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from mserve_operator import metrics, names
from mserve_operator.builders.ports import ADMIN_PORT
from mserve_operator.cost import CostEstimate, PriceSheet, estimate, pod_requests
from mserve_operator.kube_api import KubeApi
from mserve_operator.settings import OperatorSettings
from mserve_operator.usage_scrape import PodCounts, scrape
from mserve_operator.usage_window import UsageSummary, UsageWindow

# builders/deployment.py sets it to https when the admin port speaks TLS
SCHEME_ANNOTATION = "prometheus.io/scheme"


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


def usage_status(
    summary: UsageSummary | None, cost: CostEstimate, pods: int, window_s: float, message: str, now: str
) -> dict:
    """The `status.usage` object; absent figures are None, so a merge patch removes old values."""
    return {
        "windowSeconds": round(summary.seconds) if summary else None,
        "targetWindowSeconds": round(window_s),
        "pods": pods,
        "requestsPerSecond": _round(summary.requests_per_second) if summary else None,
        "errorRate": _round(summary.error_rate) if summary else None,
        "p99Seconds": _round(summary.p99_seconds) if summary else None,
        "hourlyCost": _round(cost.hourly),
        "costPer1kInferences": _round(cost.per_1k_inferences),
        "costMessage": cost.reason or None,
        "message": message or None,
        "updatedAt": now,
    }


class UsageMeter:
    """One usage window per ModelService this replica reconciles."""

    def __init__(self, api: KubeApi, settings: OperatorSettings) -> None:
        self.api = api
        self.settings = settings
        self.prices = PriceSheet(
            settings.price_cpu_hour, settings.price_memory_gib_hour, settings.price_gpu_hour
        )
        self._windows: dict[tuple[str, str], UsageWindow] = {}
        self._written: dict[tuple[str, str], dict] = {}

    def observe(self, namespace: str, name: str) -> dict:
        """Scrape the pods once, write `status.usage`, and return it."""
        # A canary's pods answer part of the traffic (forwarded by the stable pods): theirs counts too.
        listed = [
            pod
            for component in (names.COMPONENT_RUNTIME, names.COMPONENT_CANARY)
            for pod in self.api.list("v1", "Pod", namespace, names.selector_labels(name, component))
        ]
        pods = [
            pod
            for pod in listed
            if (pod.get("status") or {}).get("phase") == "Running" and (pod.get("status") or {}).get("podIP")
        ]
        counts: dict[str, PodCounts] = {}
        failed: list[str] = []
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            try:
                ip = pod["status"]["podIP"]
                scheme = (pod["metadata"].get("annotations") or {}).get(SCHEME_ANNOTATION, "http")
                timeout_s = self.settings.usage_scrape_timeout_seconds
                counts[pod_name] = scrape(ip, ADMIN_PORT, timeout_s, "https" if scheme == "https" else "http")
            except (OSError, ValueError) as exc:
                failed.append(f"{pod_name}: {exc}")
        window = self._windows.setdefault((namespace, name), UsageWindow(self.settings.usage_window_seconds))
        if counts:
            window.add(time.monotonic(), counts)
        summary = window.summary()
        cost = estimate(
            self.prices,
            [pod_requests(pod) for pod in pods],
            summary.successes_per_second if summary else None,
        )
        if failed:
            message = "metrics not read from " + "; ".join(failed)
        elif not pods:
            message = "no runtime pod is running"
        elif summary is None:
            message = "waiting for a second metrics scrape"
        else:
            message = ""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        window_s = self.settings.usage_window_seconds
        usage = usage_status(summary, cost, len(counts), window_s, message[:512], now)
        # Unchanged figures are not written again: each status write wakes the reconcile loop.
        figures = {k: v for k, v in usage.items() if k != "updatedAt"}
        if self._written.get((namespace, name)) != figures:
            self.api.patch_status(namespace, name, {"usage": usage})
            self._written[(namespace, name)] = figures
        metrics.set_usage(namespace, name, usage["requestsPerSecond"], cost.hourly, cost.per_1k_inferences)
        return usage

    def forget(self, namespace: str, name: str) -> None:
        self._windows.pop((namespace, name), None)
        self._written.pop((namespace, name), None)
        metrics.set_usage(namespace, name, None, None, None)
