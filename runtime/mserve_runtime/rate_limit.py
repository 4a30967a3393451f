"""A token bucket per caller: `rate` requests a second on average, up to `burst` at once."""

from __future__ import annotations

import math
import time

# Callers are a closed set (key names, allowed ServiceAccounts, `anonymous`); the bound only
# guards against a `namespace/*` entry admitting very many ServiceAccounts.
MAX_CALLERS = 10_000


class RateLimiter:
    def __init__(self, rate: float, burst: int = 0) -> None:
        self.rate = rate
        self.burst = burst or max(1, math.ceil(rate))
        self._buckets: dict[str, list[float]] = {}  # caller -> [tokens, last refill]

    def wait_s(self, caller: str) -> float:
        """0 when `caller` may go now (its token is taken), else seconds until it may."""
        now = time.monotonic()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= MAX_CALLERS:
                self._forget_idle(now)
            bucket = self._buckets[caller] = [float(self.burst), now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return 0.0
        bucket[0] = tokens
        return (1 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing."""
        full_after = self.burst / self.rate
        for caller, (_, last) in list(self._buckets.items()):
            if now - last >= full_after:
                del self._buckets[caller]
        if len(self._buckets) >= MAX_CALLERS:
            self._buckets.clear()


def retry_after_s(wait_s: float) -> int:
    """The `Retry-After` value: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))
