"""Density of pool mode: one `mserve serve --pool` process holding N models vs N
single-model `mserve serve` processes, in the same run.

    python -m benchmarks.pool_density [--models N] [--sizes small,minilm,minilm-int8] [--idle-s S]

Models: "small" is digits-sized (an MLP 64-32-10, ~10 KB); "minilm" has the file size of
MiniLM-L6 INT8 (~22 MB of FP32 weights: an MLP 384-1536-1536-1536-384, so the bytes, not
the architecture, match); "minilm-int8" is the real MiniLM-L6, exported with torch (cached)
and quantized with onnxruntime's dynamic INT8, copied N times. Every model is loaded and
has answered one request before memory is read. Per setup: resident memory summed over
its processes (RSS, which counts shared library pages once per process, as separate pods
would), its anonymous part (heap: what no other process can share) and PSS (shared pages
split between processes), CPU used while idle, and for the pool the first (cold: load +
warm-up + run) and a warm request's latency per model.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.models import build_tiny_mlp
from tests.support.pool_serving import start_pool
from tests.support.serving import Server, start, wait_until_ready

MIB = 1 << 20
SHAPES = {"small": (64, 32, 10), "minilm": (384, 1536, 1536, 1536, 384)}
CACHE = Path(os.environ.get("MSERVE_CACHE", Path.home() / ".cache" / "mserve"))
TOKENS = 16


def _minilm_int8(work: Path) -> Path:
    """The real MiniLM-L6 (exported once, cached as benchmarks/runtime.py does), INT8 dynamic."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tests.support.models import export_minilm

    quantized = work / "minilm-int8.onnx"
    if not quantized.exists():
        source = export_minilm(CACHE / "bench" / "minilm-l6.onnx")
        quantize_dynamic(str(source), str(quantized), weight_type=QuantType.QInt8)
    return quantized


def build_models(size: str, count: int, repo: Path, work: Path) -> tuple[list[Path], dict]:
    """`count` models of `size` in `repo`, and a request body they all accept."""
    repo.mkdir(parents=True, exist_ok=True)
    if size == "minilm-int8":
        source = _minilm_int8(work)
        paths = [repo / f"minilm{i:03d}.onnx" for i in range(count)]
        for path in paths:
            shutil.copyfile(source, path)
        ids = {"shape": [1, TOKENS], "datatype": "INT64", "data": [101] + [2000] * (TOKENS - 2) + [102]}
        names = ("input_ids", "attention_mask", "token_type_ids")
        data = {"input_ids": ids["data"], "attention_mask": [1] * TOKENS, "token_type_ids": [0] * TOKENS}
        return paths, {"inputs": [{**ids, "name": n, "data": data[n]} for n in names]}
    shape = SHAPES[size]
    paths = [build_tiny_mlp(repo / f"{size}{i:03d}.onnx", sizes=shape, seed=i) for i in range(count)]
    return paths, _body(shape[0])


@dataclass
class Footprint:
    rss: int = 0
    anon: int = 0
    pss: int = 0
    cpu_s: float = 0.0

    def add(self, other: Footprint) -> None:
        self.rss += other.rss
        self.anon += other.anon
        self.pss += other.pss
        self.cpu_s += other.cpu_s


def _read(pid: int) -> Footprint:
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            status[key] = int(value.split()[0]) << 10
    pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1]) << 10
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = 100  # os.sysconf("SC_CLK_TCK") on Linux
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return Footprint(status["VmRSS"], status["RssAnon"], pss, cpu)


def _measure(servers: list[Server], idle_s: float) -> Footprint:
    before = Footprint()
    for server in servers:
        before.add(_read(server.proc.pid))
    time.sleep(idle_s)
    total = Footprint()
    for server in servers:
        total.add(_read(server.proc.pid))
    total.cpu_s -= before.cpu_s
    return total


def _body(width: int) -> dict:
    return {"inputs": [{"name": "x", "shape": [1, width], "datatype": "FP32", "data": [0.5] * width}]}


def _timed_post(client: httpx.Client, path: str, body: dict) -> float:
    started = time.perf_counter()
    response = client.post(path, json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_size(size: str, count: int, idle_s: float, work: Path) -> list[str]:
    repo = work / f"repo-{size}"
    paths, body = build_models(size, count, repo, work)
    file_mib = paths[0].stat().st_size / MIB

    pool = start_pool(repo, work / f"pool-{size}.log", "--grpc-port", "0", "--no-access-log")
    try:
        cold, warm = [], []
        with pool.client(timeout=120) as client:
            for path in paths:
                cold.append(_timed_post(client, f"/v2/models/{path.stem}/infer", body))
                warm.append(_timed_post(client, f"/v2/models/{path.stem}/infer", body))
        pooled = _measure([pool], idle_s)
    finally:
        pool.stop()

    dedicated: list[Server] = []
    try:
        for i, path in enumerate(paths):
            args = ("--grpc-port", "0", "--no-access-log")
            dedicated.append(start(path, path.stem, work / f"one-{size}-{i}.log", *args, wait_ready=False))
        for server in dedicated:
            wait_until_ready(server, timeout=300)
            with server.client() as client:
                _timed_post(client, f"/v2/models/{server.name}/infer", body)
        alone = _measure(dedicated, idle_s)
    finally:
        for server in dedicated:
            server.stop()

    def row(name: str, processes: int, f: Footprint) -> str:
        cpu = 1000 * f.cpu_s / idle_s
        memory = f"{f.rss / MIB:.0f} | {f.anon / MIB:.0f} | {f.pss / MIB:.0f}"
        return f"| {name} | {processes} | {memory} | {cpu:.1f} |"

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b else "n/a"

    ratios = " | ".join(
        ratio(a, b) for a, b in ((alone.rss, pooled.rss), (alone.anon, pooled.anon), (alone.pss, pooled.pss))
    )
    cold_p50, warm_p50 = statistics.median(cold), statistics.median(warm)
    lines = [
        f"### {count} {size} models ({file_mib:.2f} MiB file each)",
        "",
        "| setup | processes | RSS MiB | anon MiB | PSS MiB | idle CPU ms/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        row(f"{count} dedicated `mserve serve`", count, alone),
        row("one `mserve serve --pool`", 1, pooled),
        f"| **dedicated / pool** | {count}x | {ratios} | {ratio(alone.cpu_s, pooled.cpu_s)} |",
        "",
        f"Pool, first request per model (cold: load + warm-up + run): p50 {1000 * cold_p50:.1f} ms, "
        f"p99 {1000 * _percentile(cold, 0.99):.1f} ms; second request (warm): p50 {1000 * warm_p50:.1f} ms; "
        f"cold/warm p50 {ratio(cold_p50, warm_p50)}.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=10, help="models per setup (default 10)")
    parser.add_argument(
        "--sizes", default="small,minilm", help="comma-separated: small, minilm, minilm-int8 (the real model)"
    )
    parser.add_argument("--idle-s", type=float, default=3.0, help="idle window for the CPU figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mserve-pool-density-") as tmp:
        for size in args.sizes.split(","):
            print("\n".join(run_size(size.strip(), args.models, args.idle_s, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
