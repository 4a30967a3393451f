"""Blast radius in a pool: one model flooded with slow requests, or crashed, and another
model's requests; with all models in one process and with a worker process per model.

    python -m benchmarks.pool_blast_radius [--flooders 32] [--requests 100] [--max-in-flight 16]
        [--window-s 3] [--kill-at-s 1]

One `mserve serve --pool` with two models: `heavy` (16 -> 2048 -> 2048 -> 4, sent 256-row
requests: tens of ms each) and `light` (16 -> 64 -> 4, one row). `light` is measured by one
client sending requests one after another. For each isolation (`MSERVE_POOL_ISOLATION` none:
one process, the baseline; process: a worker process per model):

1. `light` alone (`--requests` requests; the shared-mode one is every ratio's baseline);
2. while `--flooders` clients send `heavy` requests without pause (a refused one is resent at
   once), with the per-model cap off (`MSERVE_POOL_MODEL_MAX_IN_FLIGHT` = `--max-in-flight`:
   admission per process only);
3. the same flood with the per-model cap at its default (half of `--max-in-flight`);
4. a crash: `light` asked back to back for `--window-s` seconds; at `--kill-at-s` the benchmark
   sends SIGSEGV to `heavy`'s worker (the pid the server logs for it), or, with one process,
   to the server itself (every model is in it). Nothing restarts a server outside
   Kubernetes, so `light`'s failures are counted out of the requests attempted in the window
   (a refused connection returns at once: attempts after the kill are many). Then `heavy` is
   asked once more: in a worker, its model loads again (the latency is the reload's).

The crash report's cost (`MSERVE_CRASH_REPORT_FILE`: two `pwrite`s per request when requests
come one at a time, its worst case): two pool processes, one with it and one without, up at
once and sent `light` requests in turn, so that both see the same neighbours.

Then the memory of each kind of pool with no model loaded and with both loaded, summed over
the server and its descendants (the forkserver and the workers).

Each cell: `light`'s answered share, p50/p99; `heavy`'s served and refused requests per second.
Ratios against the one-process baseline of the same run. The flood runs in a process of its
own (its threads would otherwise hold the measuring client's GIL), on the same cores as the
server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import httpx

from benchmarks.closed_loop import NO_ANSWER, Run, drive, percentile
from benchmarks.process_memory import Footprint, read_tree
from tests.support.models import build_tiny_mlp
from tests.support.pool_serving import start_pool
from tests.support.serving import Server

LIGHT = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
CAP = "MSERVE_POOL_MODEL_MAX_IN_FLIGHT"
ISOLATION = "MSERVE_POOL_ISOLATION"
LABELS = {"none": "one process", "process": "worker per model"}
LIGHT_PATH = "/v2/models/light/infer"
HEAVY = {"inputs": [{"name": "x", "shape": [256, 16], "datatype": "FP32", "data": [0.5] * (16 * 256)}]}


def _light(url: str, requests: int) -> Run:
    return drive(url, [LIGHT_PATH], LIGHT, requests=requests)


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


@dataclass
class FloodCell:
    label: str
    light: Run
    heavy_served_s: float = 0.0
    heavy_refused_s: float = 0.0


@dataclass
class CrashCell:
    label: str
    light: Run
    killed_at: float
    heavy_before_s: float
    heavy_after: str


def _start(repo: Path, log: Path, max_in_flight: int, env: dict[str, str]) -> Server:
    args = ["--no-access-log", "--max-in-flight", str(max_in_flight), "--pool-preload", "heavy,light"]
    return start_pool(repo, log, *args, env=env)


def _flood_cell(
    label: str, repo: Path, log: Path, flooders: int, requests: int, max_in_flight: int, env: dict[str, str]
) -> FloodCell:
    server = _start(repo, log, max_in_flight, env)
    stop, served, refused = (multiprocessing.Value("i", 0) for _ in range(3))
    flood = multiprocessing.Process(target=_flood, args=(server.url, flooders, stop, served, refused))
    try:
        _light(server.url, 10)  # warm
        if not flooders:
            return FloodCell(label, _light(server.url, requests))
        flood.start()
        time.sleep(1.0)  # the flood at its steady state
        before = served.value, refused.value
        light = _light(server.url, requests)
        rates = (served.value - before[0]) / light.seconds, (refused.value - before[1]) / light.seconds
        return FloodCell(label, light, *rates)
    finally:
        stop.value = 1
        if flood.pid is not None:
            flood.join(60)
        server.stop()


def _worker_pid(server: Server, model: str) -> int:
    """The model's worker, from the server's log line naming it (written once it is loaded)."""
    deadline = time.monotonic() + 30
    while not (found := re.findall(rf"model '{model}' runs in worker process (\d+)", server.logs())):
        if time.monotonic() > deadline:
            raise SystemExit(f"no worker process logged for '{model}' in 30 s:\n{server.logs()[-4000:]}")
        time.sleep(0.1)
    return int(found[-1])


def _heavy_served(url: str) -> float:
    """`heavy` asked until it answers 200 (a load may outlast MSERVE_POOL_LOAD_WAIT_S on a busy
    machine: 503, retry); the latency of the answered request."""
    deadline = time.monotonic() + 120
    while (answer := _heavy_once(url))[0] != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"`heavy` still answers {answer[0]} after 120 s")
        time.sleep(0.5)
    return answer[1]


def _heavy_once(url: str) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        status = httpx.post(f"{url}/v2/models/heavy/infer", json=HEAVY, timeout=60).status_code
    except httpx.TransportError:
        status = NO_ANSWER
    return status, time.perf_counter() - started


def _crash_cell(
    repo: Path, log: Path, isolation: str, window_s: float, kill_at_s: float, max_in_flight: int
) -> CrashCell:
    """`light` asked back to back for `window_s`; SIGSEGV at `kill_at_s` to `heavy`'s worker
    (a worker per model) or to the server (one process); then `heavy` once more."""
    server = _start(repo, log, max_in_flight, {ISOLATION: isolation})
    try:
        _light(server.url, 10)  # warm
        _heavy_served(server.url)
        heavy_before_s = _heavy_served(server.url)
        victim = _worker_pid(server, "heavy") if isolation == "process" else server.proc.pid
        killed_at: list[float] = []

        def kill() -> None:
            killed_at.append(time.perf_counter())
            os.kill(victim, signal.SIGSEGV)

        timer = threading.Timer(kill_at_s, kill)
        timer.start()
        light = drive(server.url, [LIGHT_PATH], LIGHT, seconds=window_s)
        timer.join()
        status, seconds = _heavy_once(server.url)
        heavy_after = f"{status} in {1000 * seconds:.0f} ms" if status else "no answer (server gone)"
        if status == 200 and isolation == "process":
            heavy_after += f" (new worker: pid {_worker_pid(server, 'heavy')}, was {victim})"
        label = "SIGSEGV to `heavy`'s worker" if isolation == "process" else "SIGSEGV to the server"
        return CrashCell(f"{label} ({LABELS[isolation]})", light, killed_at[0], heavy_before_s, heavy_after)
    finally:
        server.stop()


def _timing(run: Run, base_p50_ms: float) -> str:
    if not run.answered:
        return "- | - | -"
    return f"{run.p50_ms():.1f} | {run.p99_ms():.1f} | {run.p50_ms() / base_p50_ms:.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flooders", type=int, default=32)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--window-s", type=float, default=3.0, help="the crash cells' window")
    parser.add_argument("--kill-at-s", type=float, default=1.0, help="when in the window the SIGSEGV goes")
    args = parser.parse_args()
    if not 0 < args.kill_at_s < args.window_s:
        parser.error(
            f"--kill-at-s must be within the window (0, {args.window_s:g}), received {args.kill_at_s:g}"
        )
    with tempfile.TemporaryDirectory(prefix="mserve-pool-blast-") as tmp:
        repo = Path(tmp) / "repo"
        build_tiny_mlp(repo / "heavy.onnx", sizes=(16, 2048, 2048, 4))
        build_tiny_mlp(repo / "light.onnx")
        report = str(Path(tmp) / "termination-log")
        half = args.max_in_flight // 2
        cells = []
        for kind, name in LABELS.items():
            cells += [
                (f"`light` alone ({name})", kind, 0, {}),
                (
                    f"flood, cap per process only ({name})",
                    kind,
                    args.flooders,
                    {CAP: str(args.max_in_flight)},
                ),
                (f"flood, cap per model: {half} ({name})", kind, args.flooders, {}),
            ]
        rows = []
        for i, (label, kind, flooders, env) in enumerate(cells):
            log = Path(tmp) / f"pool{i}.log"
            full_env = {ISOLATION: kind, **env}
            rows.append(_flood_cell(label, repo, log, flooders, args.requests, args.max_in_flight, full_env))
        crashes = [
            _crash_cell(
                repo, Path(tmp) / f"crash-{kind}.log", kind, args.window_s, args.kill_at_s, args.max_in_flight
            )
            for kind in LABELS
        ]
        without, with_report = _interleaved(repo, Path(tmp), report, args.requests)
        memory = {kind: _process_memory(repo, Path(tmp) / f"memory-{kind}.log", kind) for kind in LABELS}
    base = rows[0].light.p50_ms()
    print(f"### One model flooded: {args.flooders} clients on `heavy`, `light` measured by one client")
    print(f"(MSERVE_MAX_IN_FLIGHT={args.max_in_flight}, {args.requests} `light` requests per cell)\n")
    print(
        "| cell | light answered | light p50 ms | light p99 ms | p50 / alone (one process) "
        "| heavy served/s | heavy 503/s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        answered = f"{row.light.answered}/{row.light.attempted}"
        timing = _timing(row.light, base)
        print(
            f"| {row.label} | {answered} | {timing} | {row.heavy_served_s:.0f} | {row.heavy_refused_s:.0f} |"
        )
    window = f"{args.window_s:g} s, SIGSEGV at {args.kill_at_s:g} s"
    print(f"\n### A crash: `light` asked back to back for {window}\n")
    print(
        "| cell | light answered / attempted | after the kill | light p50 ms | light p99 ms "
        "| p50 / alone (one process) | `heavy` warm before | `heavy`'s next request |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for crash in crashes:
        light, after = crash.light, crash.light.since(crash.killed_at)
        print(
            f"| {crash.label} | {light.answered}/{light.attempted} | {after.answered}/{after.attempted} "
            f"| {_timing(crash.light, base)} | {1000 * crash.heavy_before_s:.0f} ms | {crash.heavy_after} |"
        )
    print("\n### The crash report's cost, `light` requests one at a time to two processes in turn\n")
    print("| process | p50 ms | p99 ms | p50 / without |")
    print("| --- | ---: | ---: | ---: |")
    base = statistics.median(without)
    for label, latencies in (("without", without), ("with the crash report", with_report)):
        p50 = statistics.median(latencies)
        p99 = percentile(latencies, 0.99)
        print(f"| {label} | {1000 * p50:.2f} | {1000 * p99:.2f} | {p50 / base:.2f}x |")
    mib = 1 << 20
    print("\n### Memory of each kind of pool (server + forkserver + workers)\n")
    print(
        "| pool | models loaded | processes | RSS MiB | anon MiB | PSS MiB | private MiB "
        "| PSS / one process, loaded |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    loaded_pss = memory["none"][1].pss
    for kind, (bare, loaded) in memory.items():
        for what, f in (("none", bare), ("`heavy` and `light`", loaded)):
            sizes = " | ".join(f"{value / mib:.0f}" for value in (f.rss, f.anon, f.pss, f.uss))
            print(f"| {LABELS[kind]} | {what} | {f.processes} | {sizes} | {f.pss / loaded_pss:.2f}x |")


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
                client.post(LIGHT_PATH, json=LIGHT).raise_for_status()
                if i >= 10:
                    seconds.append(time.perf_counter() - started)
        for client in clients:
            client.close()
        return latencies
    finally:
        for server in servers:
            server.stop()


def _process_memory(repo: Path, log: Path, isolation: str) -> tuple[Footprint, Footprint]:
    """A pool's memory (server and descendants) before any model loads, and with both loaded."""
    server = start_pool(repo, log, "--no-access-log", env={ISOLATION: isolation})
    try:
        time.sleep(1.0)
        bare = read_tree(server.proc.pid)
        _heavy_served(server.url)
        if _light(server.url, 1).failed:
            raise SystemExit(f"`light` did not answer in the memory cell:\n{server.logs()[-4000:]}")
        time.sleep(1.0)
        return bare, read_tree(server.proc.pid)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
