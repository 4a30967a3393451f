"""gRPC vs REST (binary tensor extension) on the same `mserve serve` process: tiny MLP, concurrency 32.

    python -m benchmarks.runtime_grpc [--requests 4000] [--seconds 15] [--concurrency 32]

One server (dynamic batching on), one client process on loopback driving it with tritonclient's
asyncio clients (`tritonclient.grpc.aio`, `tritonclient.http.aio` with binary inputs and outputs),
each run bounded by a request count and a time limit. Prints p50/p99 latency and requests/s per
protocol and the gRPC/REST ratios. Not a timed test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpc_client
import tritonclient.http.aio as http_client

from tests.support.models import build_tiny_mlp
from tests.support.serving import serving

MODEL_NAME = "tiny"
FEATURES = 16


@dataclass
class Row:
    case: str
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000)


async def drive(
    call: Callable[[], Awaitable[object]], concurrency: int, requests: int, seconds: float
) -> Row:
    """`concurrency` workers issue `call` back to back until `requests` are done or time runs out."""
    latencies: list[float] = []
    remaining = requests
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Row("", len(latencies), time.perf_counter() - started, latencies)


async def measure(grpc_url: str, http_url: str, args: argparse.Namespace) -> list[Row]:
    x = np.random.default_rng(0).random((1, FEATURES), dtype=np.float32)
    grpc = grpc_client.InferenceServerClient(grpc_url)
    http = http_client.InferenceServerClient(http_url.removeprefix("http://"), conn_limit=args.concurrency)
    grpc_input = grpc_client.InferInput("x", [1, FEATURES], "FP32")
    grpc_input.set_data_from_numpy(x)
    http_input = http_client.InferInput("x", [1, FEATURES], "FP32")
    http_input.set_data_from_numpy(x, binary_data=True)
    http_output = http_client.InferRequestedOutput("y", binary_data=True)

    async def grpc_call() -> object:
        return await grpc.infer(MODEL_NAME, [grpc_input])

    async def http_call() -> object:
        return await http.infer(MODEL_NAME, [http_input], outputs=[http_output])

    cases = [("REST binary", http_call), ("gRPC raw", grpc_call)]
    rows = []
    try:
        for _, call in cases:  # warm up connections and the server's code paths
            await drive(call, args.concurrency, 200, 10)
        for name, call in cases:
            row = await drive(call, args.concurrency, args.requests, args.seconds)
            row.case = name
            rows.append(row)
    finally:
        await grpc.close()
        await http.close()
    return rows


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    rest, grpc = rows
    print(
        f"\ntiny MLP ({FEATURES}-64-4), batch 1 per request, concurrency {args.concurrency}, "
        f"server: --max-batch-size 32 --max-batch-delay-ms 2 --threads 1, {os.cpu_count()} CPUs\n"
    )
    print("| case | requests | req/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row.case} | {row.requests} | {row.rps:.0f} | {row.percentile(50):.2f} | "
            f"{row.percentile(99):.2f} |"
        )
    print(
        f"\ngRPC / REST binary: throughput x{grpc.rps / rest.rps:.2f}, "
        f"p50 x{grpc.percentile(50) / rest.percentile(50):.2f}, "
        f"p99 x{grpc.percentile(99) / rest.percentile(99):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per case (upper bound)")
    parser.add_argument("--seconds", type=float, default=15.0, help="time limit per case")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mserve-bench-grpc-") as tmp:
        folder = Path(tmp)
        model = build_tiny_mlp(folder / "tiny.onnx", sizes=(FEATURES, 64, 4))
        server_args = ("--max-batch-size", "32", "--max-batch-delay-ms", "2", "--no-access-log")
        log = folder / "mserve.log"
        with serving(model, MODEL_NAME, log, "--threads", "1", *server_args, grpc=True) as served:
            rows = asyncio.run(measure(served.grpc_url, served.url, args))
            assert served.alive(), served.logs()
    print_table(rows, args)


if __name__ == "__main__":
    main()
