"""Which onnxruntime execution settings serve the chosen model fastest, measured on this model.

A few candidates (one thread, spinning, parallel execution, a lower graph level) are timed
against the runtime's defaults. Each is opened by the runtime's own session builder and run
as the runtime would run it: batch 1, with as many runs in flight as the runtime's executor
allows for its thread count (`concurrent_runs`). What is compared is runs per second, the
median of rounds that alternate between candidates so that load on a shared machine hits
every candidate alike.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import numpy as np
from mserve_contract.optimization_report import SessionOptions, SessionTrial
from mserve_runtime.cpu_limit import concurrent_runs, default_threads
from mserve_runtime.onnx_model import SessionConfig, build_session

ROUNDS = 3
ROUND_SECONDS = 0.3
MIN_RUNS = 3  # per candidate and round, however slow the model
WARMUP_RUNS = 2
# The runtime's defaults were chosen on served throughput (docs/runtime.md); a gain smaller
# than this, measured without the server's own threads competing, is not worth leaving them.
MARGIN = 0.05
DEFAULTS = "runtime defaults"


def candidates(cpus: int) -> list[tuple[str, SessionOptions]]:
    found = [
        (DEFAULTS, SessionOptions()),
        ("spinning threads", SessionOptions(allow_spinning=True)),
        ("parallel execution", SessionOptions(execution_mode="parallel", inter_op_threads=2)),
        ("graph level extended", SessionOptions(graph_level="extended")),
    ]
    if cpus > 1:
        found.insert(1, ("one thread", SessionOptions(intra_op_threads=1)))
    return found


def runs_per_second(session, feed: dict[str, np.ndarray], runs_at_once: int, seconds: float) -> float:
    """Throughput of `runs_at_once` threads calling session.run (onnxruntime releases the GIL)."""
    counts = [0] * runs_at_once
    started = time.perf_counter()
    deadline = started + seconds

    def loop(index: int) -> None:
        while time.perf_counter() < deadline or sum(counts) < MIN_RUNS:
            session.run(None, feed)
            counts[index] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(runs_at_once)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - started)


def measure(
    model: Path, feed: dict[str, np.ndarray], threads: int | None = None
) -> tuple[SessionOptions, list[SessionTrial], str]:
    """The chosen settings, every trial, and why.

    `threads` stands for 0 ("one per CPU") in the trials; by default the CPUs the runtime
    would count here (the cgroup limit, not the node's cores).
    """
    cpus = threads or default_threads()
    tried = candidates(cpus)
    runs: list[tuple[object, int]] = []
    for _, options in tried:
        intra = options.intra_op_threads or cpus
        session = build_session(str(model), SessionConfig(intra, "cpu", options))
        for _ in range(WARMUP_RUNS):
            session.run(None, feed)
        runs.append((session, concurrent_runs(intra, cpus)))
    rounds: list[list[float]] = [[] for _ in tried]
    for _ in range(ROUNDS):
        for store, (session, at_once) in zip(rounds, runs, strict=True):
            store.append(runs_per_second(session, feed, at_once, ROUND_SECONDS))
    trials = [
        SessionTrial(
            name=name, options=options, concurrent_runs=at_once, runs_per_s=round(statistics.median(store), 3)
        )
        for (name, options), (_, at_once), store in zip(tried, runs, rounds, strict=True)
    ]
    best = max(trials, key=lambda t: t.runs_per_s)
    default = trials[0]
    if best is default or best.runs_per_s < default.runs_per_s * (1 + MARGIN):
        return default.options, trials, f"{DEFAULTS}: no candidate was {MARGIN:.0%} faster"
    return (
        best.options,
        trials,
        f"{best.name}: {best.runs_per_s / default.runs_per_s:.2f}x the runtime defaults",
    )
