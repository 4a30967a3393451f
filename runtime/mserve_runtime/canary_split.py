"""A deterministic share of requests: a credit counter, not a random draw.

Each request adds `percent` credit; a request that brings the credit to 100 is taken and
pays 100 back. After n requests at a constant share, floor(n * percent / 100) (give or take
one) were taken, whatever their timing: a 5% canary gets 5% of requests from the first
hundred on, which a coin flip per request gives only on average.
"""

from __future__ import annotations


class CreditShare:
    """Takes `percent`% of the calls to `take` (event-loop only: no lock)."""

    __slots__ = ("credit",)

    def __init__(self) -> None:
        self.credit = 0.0

    def take(self, percent: float) -> bool:
        """Whether this request is in the share; `percent` may change from call to call."""
        if percent <= 0:
            return False
        credit = self.credit + percent
        if credit >= 100:
            self.credit = credit - 100
            return True
        self.credit = credit
        return False
