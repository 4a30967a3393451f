"""Churn in a pool: models requested round-robin when the budget holds only some of them.

    python -m benchmarks.pool_churn [--models 100] [--fits 20] [--requests 1000] [--clients 4]

One `mserve serve --pool` process with `--models` digits-sized models and a memory budget
of `--fits` models' measured footprints (read from the repository index after a load).
Round-robin over all models (every request finds its model evicted: LRU's worst case) is
compared, in the same run, with round-robin over `--fits` models (all stay loaded):
throughput, p50/p99 latency, failed requests.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

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


def _drive(url: str, names: list[str], requests: int, clients: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                started = time.perf_counter()
                status = client.post(f"/v2/models/{names[i % len(names)]}/infer", json=BODY).status_code
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    failures[0] += status != 200

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, failures[0]


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
                _drive(server.url, subset, len(subset), 1)  # warm: every model of the subset loaded once
                seconds, latencies, failed = _drive(server.url, subset, args.requests, args.clients)
                rows.append((label, args.requests / seconds, latencies, failed))
            with server.client() as client:
                loaded = sum(r["state"] == "READY" for r in index(client).values())
        finally:
            server.stop()
    print(f"### Churn: {args.models} digits-sized models, budget {budget} bytes = {args.fits} x {footprint}")
    print(f"({args.requests} requests, {args.clients} clients; {loaded} models loaded at the end)\n")
    print("| traffic | req/s | p50 ms | p99 ms | failed |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, rate, latencies, failed in rows:
        p50, p99 = 1000 * statistics.median(latencies), 1000 * _p99(latencies)
        print(f"| {label} | {rate:.0f} | {p50:.1f} | {p99:.1f} | {failed} |")
    (_, fit_rate, fit_lat, _), (_, churn_rate, churn_lat, _) = rows
    p50_ratio = statistics.median(churn_lat) / statistics.median(fit_lat)
    p99_ratio = _p99(churn_lat) / _p99(fit_lat)
    print(f"| **churn / all fit** | {churn_rate / fit_rate:.2f}x | {p50_ratio:.1f}x | {p99_ratio:.1f}x | |")


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[round(0.99 * (len(ordered) - 1))]


if __name__ == "__main__":
    main()
