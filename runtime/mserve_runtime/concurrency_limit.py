"""An adaptive cap on requests in flight, from how long model runs take (a gradient limit).

The shape of Netflix's concurrency-limits `Gradient2Limit` and Envoy's adaptive_concurrency
filter: keep the recent minimum of a latency sample as what the server does unloaded, and
every window scale the limit by `tolerance x minimum / sample` (never below half, never up by
more than a square root's headroom). Past capacity, latency grows with the queue and the limit
shrinks until the runs it admits finish within the tolerance; below it, the limit grows back.

The sample is a model run's sojourn: from its oldest request's arrival in the batcher (or the
executor's queue) to the run's end, so it holds the queue in front of the model and the run,
not the HTTP work around them, which admitting fewer does not shorten. (A request's whole time
in the server was tried too: for a model as small as the tiny MLP that time is HTTP work,
several times its unloaded value at 32 connections, and the limit shed load the server could
serve.) Batches under load have more rows and run longer than one row unloaded: the tolerance
is what that may cost; `slack_s` keeps models whose runs take microseconds from being held to
microseconds of queue.
"""

from __future__ import annotations

import math

# A window closes after this long and at least MIN_SAMPLES runs, whichever is later.
WINDOW_S = 0.1
MIN_SAMPLES = 3
# The minimum is that of the current and the previous period: an old, lucky minimum ages out
# while the limit is at its cap or its floor (there the small batches at the least concurrency
# become the new minimum); between them, while it sheds, the old one is kept.
MIN_PERIOD_S = 10.0


class GradientLimit:
    """The limit on requests in flight, between `floor` and `ceiling`, from run sojourns."""

    def __init__(self, floor: int, ceiling: int, tolerance: float, slack_s: float) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError(f"floor {floor} must be from 1 to the ceiling {ceiling}")
        if not tolerance >= 1:
            raise ValueError(f"tolerance {tolerance} must be at least 1")
        self.floor, self.ceiling, self.tolerance, self.slack_s = floor, ceiling, tolerance, slack_s
        self.limit = float(ceiling)
        self.min_s = math.inf
        self._previous_min_s = math.inf
        self._period_min_s = math.inf
        self._period_end = -math.inf
        self._window_end = -math.inf
        self._sum_s = 0.0
        self._count = 0

    def observe(self, sojourn_s: float, now: float) -> int:
        """One run's sojourn, ending at `now` (a monotonic clock); the limit after it."""
        if now >= self._period_end:
            if self.floor < self.limit < self.ceiling:
                # Shedding: runs now take the queue the limit holds, not the unloaded time, and
                # adopting them as the minimum let the limit drift back to the cap within 20 s
                # of a sustained overload. Keep the old one; it ages at the floor (the least
                # concurrency, where Envoy re-measures its minimum too) or at the cap.
                self._previous_min_s = min(self._previous_min_s, self._period_min_s)
            else:
                self._previous_min_s = self._period_min_s
            self._period_min_s = math.inf
            self._period_end = now + MIN_PERIOD_S
        if sojourn_s < self._period_min_s:
            self._period_min_s = sojourn_s
        self.min_s = min(self._period_min_s, self._previous_min_s)
        self._sum_s += sojourn_s
        self._count += 1
        if now >= self._window_end and self._count >= MIN_SAMPLES:
            self._update(self._sum_s / self._count)
            self._window_end = now + WINDOW_S
            self._sum_s, self._count = 0.0, 0
        return int(self.limit)

    def target_s(self) -> float:
        """The sojourn the limit steers to."""
        return self.tolerance * self.min_s + self.slack_s

    def _update(self, sample_s: float) -> None:
        gradient = max(0.5, min(1.0, self.target_s() / sample_s)) if sample_s > 0 else 1.0
        grown = self.limit * gradient + (math.sqrt(self.limit) if gradient == 1.0 else 0.0)
        self.limit = max(float(self.floor), min(float(self.ceiling), grown))
