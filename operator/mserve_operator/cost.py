"""Cost per 1,000 inferences: the runtime pods' resource requests priced by the install's sheet,
divided by the successful inferences they answered per hour over the usage window.

An inference is one successfully answered request (a batch of rows in one request counts once).
When no figure can be given, `CostEstimate.reason` says why and the figure is None: no sheet,
no price for a resource the pods request, or no successful inference in the window.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes.utils import parse_quantity

GIB = 1024**3


@dataclass(frozen=True)
class PriceSheet:
    """Prices per hour; None means not priced."""

    cpu_hour: float | None = None
    memory_gib_hour: float | None = None
    gpu_hour: float | None = None

    @property
    def empty(self) -> bool:
        return self.cpu_hour is None and self.memory_gib_hour is None and self.gpu_hour is None


@dataclass(frozen=True)
class PodRequests:
    cpu: float = 0.0
    """Cores."""
    memory_gib: float = 0.0
    gpus: float = 0.0


@dataclass(frozen=True)
class CostEstimate:
    hourly: float | None
    per_1k_inferences: float | None
    reason: str
    """Empty when both figures are given."""


def pod_requests(pod: dict) -> PodRequests:
    """Sum of the containers' resource requests; a GPU is any extended resource named `*/gpu`."""
    cpu = memory = gpus = 0.0
    for container in (pod.get("spec") or {}).get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        for resource, value in requests.items():
            quantity = float(parse_quantity(str(value)))
            if resource == "cpu":
                cpu += quantity
            elif resource == "memory":
                memory += quantity
            elif resource.endswith("/gpu"):
                gpus += quantity
    return PodRequests(cpu, memory / GIB, gpus)


def _hourly(prices: PriceSheet, pods: list[PodRequests]) -> tuple[float | None, str]:
    total = PodRequests(sum(p.cpu for p in pods), sum(p.memory_gib for p in pods), sum(p.gpus for p in pods))
    hourly = 0.0
    for amount, price, what in (
        (total.cpu, prices.cpu_hour, "CPU-hour"),
        (total.memory_gib, prices.memory_gib_hour, "GiB-hour"),
        (total.gpus, prices.gpu_hour, "GPU-hour"),
    ):
        if amount <= 0:
            continue
        if price is None:
            return None, f"the price sheet has no {what} price, but the runtime pods request {amount:g}"
        hourly += amount * price
    return hourly, ""


def estimate(prices: PriceSheet, pods: list[PodRequests], successes_per_second: float | None) -> CostEstimate:
    if prices.empty:
        return CostEstimate(None, None, "no price sheet configured (the chart's usage.prices)")
    if not pods:
        return CostEstimate(None, None, "no runtime pod is running")
    hourly, reason = _hourly(prices, pods)
    if hourly is None:
        return CostEstimate(None, None, reason)
    if successes_per_second is None:
        return CostEstimate(hourly, None, "throughput not measured yet (two metrics scrapes are needed)")
    if successes_per_second <= 0:
        return CostEstimate(hourly, None, "no successful inference in the usage window")
    return CostEstimate(hourly, hourly / (successes_per_second * 3600.0) * 1000.0, "")
