"""Churn in a pool: models requested round-robin when the budget holds only some of them.

    python -m benchmarks.pool_churn [--models 100] [--fits 20] [--requests 1000] [--clients 4]

One `mserve serve --pool` process with `--models` digits-sized models and a memory budget
of `--fits` models' measured footprints (read from the repository index after a load).
Round-robin over all models (every request finds its model evicted: LRU's worst case) is
compared, in the same run, with round-robin over `--fits` models (all stay loaded):
throughput and p50/p99 latency of the answered requests, failed requests.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.closed_loop import drive
from tests.support.models import build_tiny_mlp
from tests.support.pool_serving import index, start_pool

SHAPE = (64, 32, 10)
BODY = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}


def _footprint(repo: Path, log: Path) -> int:
    """A model's accounted memory: the second load's (the first carries onnxruntime's set-up)."""
    server = start_pool(repo, log, "--grpc-port", "0", "--no-access-log")
    try:
        with server.client() as client:
            for name in ("c000", "c001"):
                client.post(f"/v2/models/{name}/infer", json=BODY).raise_for_status()
            return int(index(client)["c001"]["memory_bytes"])
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--fits", type=int, default=20)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mserve-pool-churn-") as tmp:
        repo = Path(tmp) / "repo"
        names = [f"c{i:03d}" for i in range(args.models)]
        for i, name in enumerate(names):
            build_tiny_mlp(repo / f"{name}.onnx", sizes=SHAPE, seed=i)
        footprint = _footprint(repo, Path(tmp) / "measure.log")
        budget = int(footprint * (args.fits + 0.5))
        server = start_pool(
            repo,
            Path(tmp) / "pool.log",
            "--grpc-port",
            "0",
            "--no-access-log",
            "--pool-memory-bytes",
            str(budget),
        )
        rows = []
        try:
            for label, subset in ((f"round robin over {args.fits} (all fit)", names[: args.fits]),
                                  (f"round robin over {args.models} (fits {args.fits})", names)):  # fmt: skip
                paths = [f"/v2/models/{name}/infer" for name in subset]
                drive(
                    server.url, paths, BODY, requests=len(paths)
                )  # warm: each model of the subset loaded once
                run = drive(server.url, paths, BODY, requests=args.requests, clients=args.clients)
                rows.append((label, run))
            with server.client() as client:
                loaded = sum(r["state"] == "READY" for r in index(client).values())
        finally:
            server.stop()
    print(f"### Churn: {args.models} digits-sized models, budget {budget} bytes = {args.fits} x {footprint}")
    print(f"({args.requests} requests, {args.clients} clients; {loaded} models loaded at the end)\n")
    print("| traffic | req/s | p50 ms | p99 ms | failed |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, run in rows:
        print(f"| {label} | {run.rate:.0f} | {run.p50_ms():.1f} | {run.p99_ms():.1f} | {run.failed} |")
    fit, churn = rows[0][1], rows[1][1]
    ratios = f"{churn.rate / fit.rate:.2f}x | {churn.p50_ms() / fit.p50_ms():.1f}x"
    ratios += f" | {churn.p99_ms() / fit.p99_ms():.1f}x"
    print(f"| **churn / all fit** | {ratios} | |")


if __name__ == "__main__":
    main()
