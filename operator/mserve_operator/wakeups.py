"""Wake a ModelService's reconcile loop early: a child changed, or the spec did.

Pokes coalesce: ten pod events during one reconcile cause one more reconcile, not ten.
"""

from __future__ import annotations

import asyncio


class Wakeups:
    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def _event(self, namespace: str, name: str) -> asyncio.Event:
        return self._events.setdefault((namespace, name), asyncio.Event())

    def poke(self, namespace: str, name: str) -> None:
        self._event(namespace, name).set()

    async def wait(self, namespace: str, name: str, seconds: float) -> bool:
        """True when poked, False when `seconds` passed; either way the poke is consumed."""
        event = self._event(namespace, name)
        try:
            await asyncio.wait_for(event.wait(), timeout=seconds)
            return True
        except TimeoutError:
            return False
        finally:
            event.clear()

    def forget(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)
