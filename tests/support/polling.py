"""Wait by polling with a deadline, never by sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(
    what: str,
    condition: Callable[[], T],
    timeout: float = 60,
    interval: float = 0.5,
    transient: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `condition` until it returns something truthy and return that.

    An exception of a `transient` type counts as "not yet"; any other propagates. After
    `timeout` seconds, fail naming `what` and the last value or error.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except transient as error:
            last = error
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"[:3000])
        time.sleep(interval)
