"""How long one model run takes per batch size: the floor under any admitted latency.

    python -m benchmarks.batch_run_time [--runs 20] [--sizes 1,2,4,8,16,32]

The big MLP (1024-4096-4096-1024) with the runtime's default session options for one core,
pinned to the CPU overload.py gives the server, `session.run` alone (no HTTP, no JSON): per
batch size the fastest and the median of `--runs` runs (sizes interleaved), and rows/s at
the fastest. A request admitted while a batch of B rows runs waits for it and then for its
own run, so its latency cannot fall below about twice the run time of B rows, whatever
admission does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.overload import SERVER_CPU
from tests.support.models import build_tiny_mlp


def main() -> None:
    from mserve_runtime.onnx_model import SessionConfig, build_session

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sizes", default="1,2,4,8,16,32")
    args = parser.parse_args()
    os.sched_setaffinity(0, {SERVER_CPU})
    print(f"# load average before {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="mserve-batch-run-") as tmp:
        path = build_tiny_mlp(Path(tmp) / "mlp.onnx", sizes=(1024, 4096, 4096, 1024))
        session = build_session(str(path), SessionConfig(threads=1))
    name = session.get_inputs()[0].name
    sizes = [int(size) for size in args.sizes.split(",")]
    feeds = {rows: {name: np.random.default_rng(0).random((rows, 1024), dtype=np.float32)} for rows in sizes}
    took: dict[int, list[float]] = {rows: [] for rows in sizes}
    for feed in feeds.values():
        session.run(None, feed)
    for _ in range(args.runs):  # sizes interleaved, so that the neighbours' load falls on all alike
        for rows, feed in feeds.items():
            started = time.perf_counter()
            session.run(None, feed)
            took[rows].append(time.perf_counter() - started)
    print("| rows | fastest ms | median ms | rows/s at the fastest | fastest vs 1 row |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for rows in sizes:
        fastest = min(took[rows])
        print(
            f"| {rows} | {1000 * fastest:.1f} | {1000 * statistics.median(took[rows]):.1f} "
            f"| {rows / fastest:,.0f} | {fastest / min(took[sizes[0]]):.1f}x |"
        )
    print(f"# load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
