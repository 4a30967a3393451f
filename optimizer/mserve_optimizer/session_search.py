"""Which onnxruntime execution settings run the chosen model fastest, measured on this model.

A few candidates (spinning, one thread, parallel execution, a lower graph level) are timed
against the runtime's defaults, alternating on the same machine, through the runtime's own
session builder, so that what is measured is what the runtime will open.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mserve_contract.optimization_report import SessionOptions, SessionTrial
from mserve_runtime.onnx_model import SessionConfig, build_session

from mserve_optimizer.latency import alternating_medians
from mserve_optimizer.ort_session import default_threads

BUDGET_SECONDS = 0.5
QUANTILE = 0.2
# The runtime's defaults were chosen on served throughput, where spinning threads compete with
# the server's own (docs/runtime.md); a raw-loop gain smaller than this is not worth leaving them.
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


def measure(
    model: Path, feed: dict[str, np.ndarray], threads: int | None = None
) -> tuple[SessionOptions, list[SessionTrial], str]:
    """The chosen settings, every trial, and why; `threads` stands for "all CPUs" (0) in the trials."""
    cpus = threads or default_threads()
    tried = candidates(cpus)
    sessions = [
        build_session(str(model), SessionConfig(options.intra_op_threads or cpus, "cpu", options))
        for _, options in tried
    ]
    ms = alternating_medians(sessions, feed, budget_s=BUDGET_SECONDS, quantile=QUANTILE)
    trials = [
        SessionTrial(name=name, options=options, ms_small=round(value, 4))
        for (name, options), value in zip(tried, ms, strict=True)
    ]
    best = min(trials, key=lambda t: t.ms_small)
    default = trials[0]
    if best is default or best.ms_small > default.ms_small * (1 - MARGIN):
        return default.options, trials, f"{DEFAULTS}: nothing was {MARGIN:.0%} faster"
    return best.options, trials, f"{best.name}: {default.ms_small / best.ms_small:.2f}x the runtime defaults"
