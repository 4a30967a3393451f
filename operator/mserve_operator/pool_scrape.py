"""Reading one pool pod's `/metrics` (admin port) into what a ModelPool's status reports.

Only the pool server's own families are read (runtime/mserve_runtime/pool_metrics.py):
per-model state, load failures and evictions, and the pod's memory budget and use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from mserve_operator.usage_scrape import read_page

READY, UNAVAILABLE = "READY", "UNAVAILABLE"


@dataclass(frozen=True)
class PoolPodMetrics:
    """One pool server's residency at the moment it was read."""

    states: dict[str, str] = field(default_factory=dict)
    """model -> its current state (READY, LOADING, UNAVAILABLE, EVICTED)."""
    load_failures: dict[str, float] = field(default_factory=dict)
    evictions: dict[str, float] = field(default_factory=dict)
    memory_used_bytes: int = 0
    memory_budget_bytes: int = 0

    @property
    def loaded(self) -> list[str]:
        return sorted(model for model, state in self.states.items() if state == READY)

    def failed(self, model: str) -> bool:
        """Not loaded because its last load failed (the runtime does not retry the same file)."""
        return self.states.get(model) == UNAVAILABLE and self.load_failures.get(model, 0) > 0


def parse_pool_metrics(text: str) -> PoolPodMetrics:
    states: dict[str, str] = {}
    failures: dict[str, float] = {}
    evictions: dict[str, float] = {}
    used = budget = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model", "")
            if sample.name == "mserve_model_state" and sample.value == 1 and model:
                states[model] = sample.labels.get("state", "")
            elif sample.name == "mserve_model_load_failures_total" and model:
                failures[model] = sample.value
            elif sample.name == "mserve_model_evictions_total" and model:
                evictions[model] = sample.value
            elif sample.name == "mserve_pool_memory_used_bytes":
                used = int(sample.value)
            elif sample.name == "mserve_pool_memory_budget_bytes":
                budget = int(sample.value)
    return PoolPodMetrics(states, failures, evictions, used, budget)


def scrape_pool_pod(ip: str, port: int, timeout_s: float) -> PoolPodMetrics:
    """Raises OSError (unreachable) or ValueError (not a metrics page)."""
    return parse_pool_metrics(read_page(ip, port, timeout_s))
