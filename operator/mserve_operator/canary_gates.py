"""The figures a canary's gates judge, from the runtime pods' own `/metrics` (admin port).

Canary pods count what they answered (forwarded and mirrored requests alike): requests by
status and their latency. Stable pods count what they served themselves (latency), the forwards
that failed (the client got the stable's answer instead: a canary error all the same), the
mirrored comparisons (agree, disagree, error) and the rollout file's generation they applied.

A step is judged on its own traffic: the counters are snapshotted when the step's weight is
applied everywhere and compared with later scrapes, pod by pod (a pod absent from the snapshot,
or whose counters went down, counts from zero), as Prometheus' `increase()` would. Snapshots
live in memory: after an operator restart the step's pause starts again with a new snapshot
(canary.py), so a verdict never rests on a window nobody measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from mserve_operator.usage_scrape import LATENCY_FAMILY, REQUESTS_FAMILY
from mserve_operator.usage_window import quantile

FORWARDED_FAMILY = "mserve_canary_forwarded"
COMPARISONS_FAMILY = "mserve_shadow_comparisons"
GENERATION_FAMILY = "mserve_rollout_generation"


@dataclass(frozen=True)
class RolloutCounts:
    """Cumulative counters of one runtime process, as far as the gates read them."""

    requests: float = 0.0
    server_errors: float = 0.0  # answered with a 5xx status
    failed_forwards: float = 0.0
    agree: float = 0.0
    disagree: float = 0.0
    shadow_errors: float = 0.0
    latency_buckets: dict[float, float] = field(default_factory=dict)
    generation: float = 0.0  # a gauge: the rollout file's generation this pod applied


_COUNTERS = ("requests", "server_errors", "failed_forwards", "agree", "disagree", "shadow_errors")


def parse_rollout_counts(text: str) -> RolloutCounts:
    values = dict.fromkeys(_COUNTERS, 0.0)
    buckets: dict[float, float] = {}
    generation = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == REQUESTS_FAMILY and sample.name.endswith("_total"):
                values["requests"] += sample.value
                if sample.labels.get("status", "").startswith("5"):
                    values["server_errors"] += sample.value
            elif family.name == LATENCY_FAMILY and sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif family.name == FORWARDED_FAMILY and sample.name.endswith("_total"):
                if sample.labels.get("outcome") == "failed":
                    values["failed_forwards"] += sample.value
            elif family.name == COMPARISONS_FAMILY and sample.name.endswith("_total"):
                key = {"agree": "agree", "disagree": "disagree", "error": "shadow_errors"}.get(
                    sample.labels.get("result", "")
                )
                if key:
                    values[key] += sample.value
            elif family.name == GENERATION_FAMILY:
                generation = max(generation, sample.value)
    return RolloutCounts(**values, latency_buckets=dict(sorted(buckets.items())), generation=generation)


def increase(new: RolloutCounts, old: RolloutCounts | None) -> RolloutCounts:
    """What one pod counted since `old`; all of it when the process restarted in between."""
    if old is None or any(getattr(new, name) < getattr(old, name) for name in _COUNTERS):
        return new
    buckets = {b: max(0.0, v - old.latency_buckets.get(b, 0.0)) for b, v in new.latency_buckets.items()}
    deltas = {name: getattr(new, name) - getattr(old, name) for name in _COUNTERS}
    return RolloutCounts(**deltas, latency_buckets=buckets, generation=new.generation)


def _total(pods: dict[str, RolloutCounts], since: dict[str, RolloutCounts]) -> RolloutCounts:
    sums = dict.fromkeys(_COUNTERS, 0.0)
    buckets: dict[float, float] = {}
    for pod, counts in pods.items():
        delta = increase(counts, since.get(pod))
        for name in _COUNTERS:
            sums[name] += getattr(delta, name)
        for bound, value in delta.latency_buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + value
    return RolloutCounts(**sums, latency_buckets=dict(sorted(buckets.items())))


@dataclass(frozen=True)
class GateFigures:
    """One step's traffic so far, canary and stable side by side."""

    canary_requests: float = 0.0
    canary_errors: float = 0.0  # the canary's 5xx plus the stable's failed forwards
    canary_p99: float | None = None
    stable_requests: float = 0.0
    stable_p99: float | None = None
    agreements: float = 0.0
    comparisons: float = 0.0  # agree + disagree (an errored comparison is an error, not a vote)
    shadow_errors: float = 0.0

    @property
    def error_rate(self) -> float | None:
        return self.canary_errors / self.canary_requests if self.canary_requests else None

    @property
    def agreement(self) -> float | None:
        return self.agreements / self.comparisons if self.comparisons else None

    def to_status(self) -> dict:
        def rounded(value: float | None) -> float | None:
            return None if value is None else float(f"{value:.4g}")

        return {
            "requests": int(self.canary_requests),
            "errors": int(self.canary_errors),
            "errorRate": rounded(self.error_rate),
            "p99Seconds": rounded(self.canary_p99),
            "stableRequests": int(self.stable_requests),
            "stableP99Seconds": rounded(self.stable_p99),
            "comparisons": int(self.comparisons),
            "agreement": rounded(self.agreement),
            "shadowErrors": int(self.shadow_errors),
        }


def figures(
    canary: dict[str, RolloutCounts],
    stable: dict[str, RolloutCounts],
    canary_since: dict[str, RolloutCounts],
    stable_since: dict[str, RolloutCounts],
) -> GateFigures:
    c, s = _total(canary, canary_since), _total(stable, stable_since)
    return GateFigures(
        canary_requests=c.requests + s.failed_forwards,
        canary_errors=c.server_errors + s.failed_forwards,
        canary_p99=quantile(0.99, c.latency_buckets) if c.requests else None,
        stable_requests=s.requests,
        stable_p99=quantile(0.99, s.latency_buckets) if s.requests else None,
        agreements=s.agree,
        comparisons=s.agree + s.disagree,
        shadow_errors=s.shadow_errors,
    )


@dataclass
class _Window:
    key: tuple
    canary: dict[str, RolloutCounts]
    stable: dict[str, RolloutCounts]


class GateWindows:
    """Per ModelService, the snapshot taken when its current step began."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], _Window] = {}

    def observe(
        self,
        namespace: str,
        name: str,
        step_key: tuple,
        canary: dict[str, RolloutCounts],
        stable: dict[str, RolloutCounts],
    ) -> GateFigures | None:
        """The step's figures so far; None when this call took the step's snapshot (a new step,
        or a step this process never saw begin: after a restart)."""
        window = self._windows.get((namespace, name))
        if window is None or window.key != step_key:
            self._windows[(namespace, name)] = _Window(step_key, dict(canary), dict(stable))
            return None
        return figures(canary, stable, window.canary, window.stable)

    def forget(self, namespace: str, name: str) -> None:
        self._windows.pop((namespace, name), None)
