"""Closed-loop HTTP clients for the pool benchmarks: each client sends its next request as soon
as the last one is answered, for a number of requests or a number of seconds, and every request
is kept (when it started, how long it took, its status; 0 when no answer came: refused, reset)."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import orjson

NO_ANSWER = 0


@dataclass
class Outcome:
    """One request: its start (perf_counter seconds), its latency in seconds, its status."""

    started: float
    seconds: float
    status: int


@dataclass
class Run:
    """Every request of one run, and the run's wall time."""

    seconds: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)

    def since(self, moment: float) -> Run:
        """The requests started at or after `moment` (a perf_counter reading)."""
        return Run(self.seconds, [o for o in self.outcomes if o.started >= moment])

    def until(self, moment: float) -> Run:
        return Run(self.seconds, [o for o in self.outcomes if o.started < moment])

    @property
    def attempted(self) -> int:
        return len(self.outcomes)

    @property
    def latencies(self) -> list[float]:
        """Latencies of the requests answered 200."""
        return [o.seconds for o in self.outcomes if o.status == 200]

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return self.attempted - self.answered

    @property
    def rate(self) -> float:
        """Requests answered 200 per second of the run."""
        return self.answered / self.seconds if self.seconds else 0.0

    def p50_ms(self) -> float:
        latencies = self.latencies
        return 1000 * statistics.median(latencies) if latencies else float("nan")

    def p99_ms(self) -> float:
        latencies = self.latencies
        return 1000 * percentile(latencies, 0.99) if latencies else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The value at quantile `q` of `values` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def drive(
    url: str,
    paths: Sequence[str],
    body: dict,
    *,
    requests: int | None = None,
    seconds: float | None = None,
    clients: int = 1,
    timeout: float = 60.0,
) -> Run:
    """`clients` threads, each with its own keep-alive connection, POST `body` to `paths` in
    turn (request i goes to paths[i % len(paths)]) until `requests` have been sent or
    `seconds` have passed, whichever is given (both: whichever comes first)."""
    if requests is None and seconds is None:
        raise ValueError("drive needs requests or seconds")
    content = orjson.dumps(body)
    headers = {"content-type": "application/json"}
    run = Run()
    lock = threading.Lock()
    counter = iter(range(requests)) if requests is not None else itertools.count()
    numbers = itertools.count()
    deadline = time.perf_counter() + seconds if seconds is not None else float("inf")

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=timeout) as client:
            while time.perf_counter() < deadline:
                with lock:
                    if next(counter, None) is None:
                        return
                    path = paths[next(numbers) % len(paths)]
                started = time.perf_counter()
                try:
                    status = client.post(path, content=content, headers=headers).status_code
                except httpx.TransportError:
                    status = NO_ANSWER
                outcome = Outcome(started, time.perf_counter() - started, status)
                with lock:
                    run.outcomes.append(outcome)

    began = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - began
    return run
