"""Blast radius in a pool: one model flooded with slow requests, another model's requests.

    python -m benchmarks.pool_blast_radius [--flooders 32] [--requests 100] [--max-in-flight 16]

One `mserve serve --pool` process with two models: `heavy` (16 -> 2048 -> 2048 -> 4, sent
256-row requests: tens of ms each) and `light` (16 -> 64 -> 4, one row). `light` is measured by
one client sending `--requests` requests one after another:

1. alone (the baseline);
2. while `--flooders` clients send `heavy` requests without pause (a refused one is resent at
   once), with the per-model cap off (`MSERVE_POOL_MODEL_MAX_IN_FLIGHT` = `--max-in-flight`:
   admission per process only, as before);
3. the same flood with the per-model cap at its default (half of `--max-in-flight`);

The crash report's cost (`MSERVE_CRASH_REPORT_FILE`: two `pwrite`s per request when requests
come one at a time, its worst case): two pool processes, one with it and one without, up at
once and sent `light` requests in turn, so that both see the same neighbours.

Then what one more process would cost (the floor of a worker-process design): the memory of
a pool process with no model loaded, against one holding both models.

Each cell: `light`'s answered share, p50/p99; `heavy`'s served and refused requests per second.
Ratios against the baseline of the same run. The flood runs in a process of its own (its
threads would otherwise hold the measuring client's GIL), on the same cores as the server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import httpx

from benchmarks.pool_density import Footprint, _read
from tests.support.models import build_tiny_mlp
from tests.support.pool_serving import start_pool

LIGHT = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
CAP = "MSERVE_POOL_MODEL_MAX_IN_FLIGHT"
HEAVY = {"inputs": [{"name": "x", "shape": [256, 16], "datatype": "FP32", "data": [0.5] * (16 * 256)}]}


def _light(url: str, requests: int) -> tuple[list[float], int]:
    """Latencies of `light`'s answered requests, and how many were not 200."""
    latencies, failed = [], 0
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(requests):
            started = time.perf_counter()
            status = client.post("/v2/models/light/infer", json=LIGHT).status_code
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failed += 1
    return latencies, failed


def _flood(url: str, clients: int, stop: Synchronized, served: Synchronized, refused: Synchronized) -> None:
    """In a process of its own: `clients` threads sending `heavy` requests until `stop`."""

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.value:
                status = client.post("/v2/models/heavy/infer", json=HEAVY).status_code
                counter = served if status == 200 else refused
                with counter.get_lock():
                    counter.value += 1

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _cell(
    repo: Path, log: Path, flooders: int, requests: int, max_in_flight: int, env: dict[str, str]
) -> tuple[list[float], int, float, float]:
    args = ["--no-access-log", "--max-in-flight", str(max_in_flight), "--pool-preload", "heavy,light"]
    server = start_pool(repo, log, *args, env=env)
    stop, served, refused = (multiprocessing.Value("i", 0) for _ in range(3))
    flood = multiprocessing.Process(target=_flood, args=(server.url, flooders, stop, served, refused))
    try:
        _light(server.url, 10)  # warm
        if not flooders:
            latencies, failed = _light(server.url, requests)
            return latencies, failed, 0.0, 0.0
        flood.start()
        time.sleep(1.0)  # the flood at its steady state
        before = served.value, refused.value
        started = time.perf_counter()
        latencies, failed = _light(server.url, requests)
        seconds = time.perf_counter() - started
        rates = (served.value - before[0]) / seconds, (refused.value - before[1]) / seconds
        return latencies, failed, *rates
    finally:
        stop.value = 1
        if flood.pid is not None:
            flood.join(60)
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flooders", type=int, default=32)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mserve-pool-blast-") as tmp:
        repo = Path(tmp) / "repo"
        build_tiny_mlp(repo / "heavy.onnx", sizes=(16, 2048, 2048, 4))
        build_tiny_mlp(repo / "light.onnx")
        report = str(Path(tmp) / "termination-log")
        cells = [
            ("`light` alone", 0, {}),
            ("flood, cap per process only", args.flooders, {CAP: str(args.max_in_flight)}),
            (f"flood, cap per model ({args.max_in_flight // 2})", args.flooders, {}),
        ]
        rows = []
        for i, (label, flooders, env) in enumerate(cells):
            log = Path(tmp) / f"pool{i}.log"
            rows.append((label, *_cell(repo, log, flooders, args.requests, args.max_in_flight, env)))
        without, with_report = _interleaved(repo, Path(tmp), report, args.requests)
        bare, loaded = _process_memory(repo, Path(tmp) / "memory.log")
    print(f"### One model flooded: {args.flooders} clients on `heavy`, `light` measured by one client")
    print(f"(MSERVE_MAX_IN_FLIGHT={args.max_in_flight}, {args.requests} `light` requests per cell)\n")
    print(
        "| cell | light answered | light p50 ms | light p99 ms | p50 / alone | heavy served/s | heavy 503/s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = statistics.median(rows[0][1])
    for label, latencies, failed, served, refused in rows:
        answered = f"{len(latencies)}/{len(latencies) + failed}"
        if latencies:
            p50, p99 = statistics.median(latencies), _p99(latencies)
            timing = f"{1000 * p50:.1f} | {1000 * p99:.1f} | {p50 / base:.1f}x"
        else:
            timing = "- | - | -"
        print(f"| {label} | {answered} | {timing} | {served:.0f} | {refused:.0f} |")
    print("\n### The crash report's cost, `light` requests one at a time to two processes in turn\n")
    print("| process | p50 ms | p99 ms | p50 / without |")
    print("| --- | ---: | ---: | ---: |")
    base = statistics.median(without)
    for label, latencies in (("without", without), ("with the crash report", with_report)):
        p50 = statistics.median(latencies)
        print(f"| {label} | {1000 * p50:.2f} | {1000 * _p99(latencies):.2f} | {p50 / base:.2f}x |")
    mib = 1 << 20
    print("\n### One pool process: the cost a worker process would add, and the models' own\n")
    print("| process | RSS MiB | anon MiB | PSS MiB |")
    print("| --- | ---: | ---: | ---: |")
    for label, footprint in (("no model loaded", bare), ("`heavy` and `light` loaded", loaded)):
        sizes = " | ".join(f"{value / mib:.0f}" for value in (footprint.rss, footprint.anon, footprint.pss))
        print(f"| {label} | {sizes} |")


def _interleaved(repo: Path, tmp: Path, report: str, requests: int) -> tuple[list[float], list[float]]:
    """`light` latencies of a pool without and one with the crash report, measured in turn."""
    args = ("--no-access-log", "--pool-preload", "light")
    servers = [
        start_pool(repo, tmp / "plain.log", *args),
        start_pool(repo, tmp / "report.log", *args, env={"MSERVE_CRASH_REPORT_FILE": report}),
    ]
    latencies: tuple[list[float], list[float]] = ([], [])
    try:
        clients = [httpx.Client(base_url=server.url, timeout=60) for server in servers]
        for i in range(10 + requests):
            for client, seconds in zip(clients, latencies, strict=True):
                started = time.perf_counter()
                client.post("/v2/models/light/infer", json=LIGHT).raise_for_status()
                if i >= 10:
                    seconds.append(time.perf_counter() - started)
        for client in clients:
            client.close()
        return latencies
    finally:
        for server in servers:
            server.stop()


def _process_memory(repo: Path, log: Path) -> tuple[Footprint, Footprint]:
    """A pool process's memory before any model loads, and with both models loaded."""
    server = start_pool(repo, log, "--no-access-log")
    try:
        time.sleep(1.0)
        bare = _read(server.proc.pid)
        _light(server.url, 1)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.post("/v2/models/heavy/infer", json=HEAVY).raise_for_status()
        time.sleep(1.0)
        return bare, _read(server.proc.pid)
    finally:
        server.stop()


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[round(0.99 * (len(ordered) - 1))]


if __name__ == "__main__":
    main()
