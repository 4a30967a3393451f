"""Bounded client load against a Service on this host's cluster: a fixed number of threads,
each stopping at a request count or a deadline, whichever comes first. Failures are counted."""

from __future__ import annotations

import threading
import time
import urllib.error
from dataclasses import dataclass, field

import numpy as np
from e2e_models import infer_response


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    # (when the request was sent, time.monotonic(); the answer's model_version) per success
    answers: list[tuple[float, str]] = field(default_factory=list)


class BoundedLoad:
    """`threads` clients calling `url` until `stop()`, `max_seconds` or `max_requests` (all threads)."""

    def __init__(
        self, url: str, model: str, x: np.ndarray, threads: int, max_seconds: float, max_requests: int
    ) -> None:
        self.url, self.model, self.x = url, model, x
        self.deadline = time.monotonic() + max_seconds
        self.max_requests = max_requests
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(threads)]

    def __enter__(self) -> BoundedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.result

    def _claim(self) -> bool:
        with self._lock:
            if (
                self._stop.is_set()
                or time.monotonic() > self.deadline
                or self.result.sent >= self.max_requests
            ):
                return False
            self.result.sent += 1
            return True

    def _client(self) -> None:
        while self._claim():
            sent = time.monotonic()
            try:
                version = infer_response(self.url, self.model, self.x, timeout=10).get("model_version", "")
            except (OSError, urllib.error.URLError, ValueError) as error:
                with self._lock:
                    self.result.failed += 1
                    if len(self.result.errors) < 20:
                        self.result.errors.append(repr(error))
                continue
            with self._lock:
                self.result.answers.append((sent, str(version)))
