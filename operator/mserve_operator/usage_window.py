"""A rolling window of per-pod counter snapshots and the summary `status.usage` reports.

Each snapshot maps pod name -> its cumulative counts. The summary compares the newest snapshot
with the oldest one still inside the window, pod by pod: a pod that was not in the oldest
snapshot, or whose counters went down (its container restarted), counts from zero. Requests/s,
error rate and p99 are computed from these increases, as Prometheus' `rate()` and
`histogram_quantile()` would over the same window.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from mserve_operator.usage_scrape import PodCounts


@dataclass(frozen=True)
class UsageSummary:
    seconds: float
    """Length of the window the figures cover (up to the configured window)."""
    requests: float
    requests_per_second: float
    successes_per_second: float
    error_rate: float | None
    """Failed / answered requests in the window; None when none were answered."""
    p99_seconds: float | None
    """None when no request was answered in the window."""


def _increase(new: PodCounts, old: PodCounts | None) -> PodCounts:
    if old is None or new.requests < old.requests:
        return new
    buckets = {b: max(0.0, v - old.latency_buckets.get(b, 0.0)) for b, v in new.latency_buckets.items()}
    return PodCounts(new.requests - old.requests, max(0.0, new.failures - old.failures), buckets)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Linear interpolation inside the bucket holding the q-quantile (as `histogram_quantile`);
    a quantile in the +Inf bucket is reported as the largest finite bound."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


class UsageWindow:
    """Snapshots of one ModelService's runtime pods, kept for `window_s` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._snapshots: deque[tuple[float, dict[str, PodCounts]]] = deque()

    def add(self, at: float, pods: dict[str, PodCounts]) -> None:
        self._snapshots.append((at, pods))
        # Keep the newest snapshot at or before the window's start, so the window stays covered.
        while len(self._snapshots) > 2 and self._snapshots[1][0] <= at - self.window_s:
            self._snapshots.popleft()

    def summary(self) -> UsageSummary | None:
        """None until two snapshots are at least a moment apart."""
        if len(self._snapshots) < 2:
            return None
        (first_at, first), (last_at, last) = self._snapshots[0], self._snapshots[-1]
        seconds = last_at - first_at
        if seconds <= 0:
            return None
        requests = failures = 0.0
        buckets: dict[float, float] = {}
        for pod, counts in last.items():
            increase = _increase(counts, first.get(pod))
            requests += increase.requests
            failures += increase.failures
            for bound, value in increase.latency_buckets.items():
                buckets[bound] = buckets.get(bound, 0.0) + value
        return UsageSummary(
            seconds=seconds,
            requests=requests,
            requests_per_second=requests / seconds,
            successes_per_second=(requests - failures) / seconds,
            error_rate=failures / requests if requests else None,
            p99_seconds=quantile(0.99, buckets) if requests else None,
        )
