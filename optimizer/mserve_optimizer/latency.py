"""Median latency of the original and the optimized model, measured alternately on the same machine."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
from mserve_contract.optimization_report import LatencyFigures

from mserve_optimizer.options import InputSpec
from mserve_optimizer.ort_session import default_threads, open_session
from mserve_optimizer.samples import batch_of

WARMUP_RUNS = 3
MIN_REPEATS = 7
MAX_REPEATS = 100
# Per model and batch size; a slow model gets fewer repeats, never fewer than MIN_REPEATS.
BUDGET_SECONDS = 2.0


def _timed_run(session, feeds: dict[str, np.ndarray]) -> float:  # session: ort.InferenceSession
    started = time.perf_counter()
    session.run(None, feeds)
    return (time.perf_counter() - started) * 1000.0


def alternating_medians(
    sessions: list, feeds: dict[str, np.ndarray], *, budget_s: float = BUDGET_SECONDS, quantile: float = 0.5
) -> list[float]:
    """Milliseconds per session at `quantile` (the median by default) of alternating runs.

    Runs alternate so that drift on a noisy machine hits every session alike; a low quantile
    approximates the uncontended time, which is what a choice between candidates needs.
    """
    for session in sessions:
        for _ in range(WARMUP_RUNS):
            session.run(None, feeds)
    samples: list[list[float]] = [[] for _ in sessions]
    deadline = time.perf_counter() + budget_s * len(sessions)
    while len(samples[0]) < MAX_REPEATS and (len(samples[0]) < MIN_REPEATS or time.perf_counter() < deadline):
        for store, session in zip(samples, sessions, strict=True):
            store.append(_timed_run(session, feeds))
    if quantile == 0.5:
        return [statistics.median(store) for store in samples]
    return [float(np.quantile(store, quantile)) for store in samples]


def compare_latency(
    original: Path,
    optimized: Path,
    specs: list[InputSpec],
    samples: dict[str, np.ndarray],
    *,
    batch_large: int = 32,
    threads: int | None = None,
    device: str = "cpu",
) -> LatencyFigures:
    threads = threads or default_threads()
    sessions = [open_session(path, threads=threads, device=device) for path in (original, optimized)]
    dynamic = all(spec.dims[0] == -1 for spec in specs)
    small, large = (1, batch_large) if dynamic else (0, 0)
    small_ms = alternating_medians(sessions, batch_of(samples, max(small, 1), specs))
    large_ms = alternating_medians(sessions, batch_of(samples, max(large, 1), specs)) if dynamic else small_ms
    return LatencyFigures(
        batch_small=small or specs[0].dims[0],
        batch_large=large or specs[0].dims[0],
        original_ms_small=round(small_ms[0], 6),
        optimized_ms_small=round(small_ms[1], 6),
        original_ms_large=round(large_ms[0], 6),
        optimized_ms_large=round(large_ms[1], 6),
        ratio_small=round(small_ms[0] / small_ms[1], 4),
        ratio_large=round(large_ms[0] / large_ms[1], 4),
        threads=threads,
        repeats=MIN_REPEATS,
    )
