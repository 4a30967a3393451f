"""Density of pool mode: one `mserve serve --pool` holding N models (in one process, and with
`MSERVE_POOL_ISOLATION=process`: a worker process per model) vs N single-model `mserve serve`
processes, in the same run; and the per-request cost of the worker's hop.

    python -m benchmarks.pool_density [--models N] [--sizes small,minilm,minilm-int8] [--idle-s S]
        [--isolation none,process] [--sequential 200] [--connections 8] [--loop-s 3] [--no-dedicated]
        [--resident K]

Each setup's memory and CPU are summed over its processes and all their descendants (a
pool with `MSERVE_POOL_ISOLATION=process` is a server, a forkserver and a worker per model).

Models: "small" is digits-sized (an MLP 64-32-10, ~10 KB); "minilm" has the file size of
MiniLM-L6 INT8 (~22 MB of FP32 weights: an MLP 384-1536-1536-1536-384, so the bytes, not
the architecture, match); "minilm-int8" is the real MiniLM-L6, exported with torch (cached)
and quantized with onnxruntime's dynamic INT8, copied N times. Every model is loaded and
has answered one request before memory is read. Per setup: resident memory summed over
its processes (RSS, which counts shared library pages once per process, as separate pods
would), its anonymous part (heap, and the copy-on-write pages a forked worker still shares
with the forkserver: counted again in each), PSS (shared pages split between processes) and
private memory (pages no other process maps), CPU used while idle, and for the pool the
first (cold: load + warm-up + run) and a warm request's latency per model. The hop (the
tensors through a pipe to the worker and back): the first model asked `--sequential` times,
one request at a time, the two pools in turn (same neighbours), then a closed loop of
`--connections` clients for `--loop-s` seconds on each pool in turn.

`--resident K` overcommits: each pool's memory budget holds K models (K + 0.5 times one
model's footprint, measured by loading it in a probe pool of the same kind first), so after
every model has answered only the K most recently used are loaded at idle, and the cold
column is what a request to an evicted model pays.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.closed_loop import Run, drive, percentile
from benchmarks.process_memory import Footprint, measure_idle
from tests.support.models import build_tiny_mlp
from tests.support.pool_serving import start_pool
from tests.support.serving import Server, start, wait_until_ready

MIB = 1 << 20
SHAPES = {"small": (64, 32, 10), "minilm": (384, 1536, 1536, 1536, 384)}
CACHE = Path(os.environ.get("MSERVE_CACHE", Path.home() / ".cache" / "mserve"))
TOKENS = 16
START_WAVE = 8  # dedicated servers started at once
POOL_LABELS = {"none": "one pool process", "process": "pool, a worker per model"}


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


def _body(width: int) -> dict:
    return {"inputs": [{"name": "x", "shape": [1, width], "datatype": "FP32", "data": [0.5] * width}]}


def _timed_post(client: httpx.Client, path: str, body: dict) -> float:
    started = time.perf_counter()
    response = client.post(path, json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


@dataclass
class Pool:
    """One pool server of this run, and what was measured of it."""

    label: str
    server: Server
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    one_by_one: list[float] = field(default_factory=list)
    idle: Footprint | None = None
    loop: Run | None = None


def _pools(repo: Path, work: Path, size: str, kinds: list[str], resident: int, body: dict) -> list[Pool]:
    pools = []
    for kind in kinds:
        env = {"MSERVE_POOL_ISOLATION": kind}
        label = POOL_LABELS[kind]
        if resident:
            env["MSERVE_POOL_MEMORY_BYTES"] = str(int((resident + 0.5) * _footprint(repo, work, env, body)))
            label += f", budget for {resident}"
        log = work / f"pool-{kind}-{size}.log"
        server = start_pool(repo, log, "--grpc-port", "0", "--no-access-log", env=env)
        pools.append(Pool(label, server))
    return pools


def _footprint(repo: Path, work: Path, env: dict[str, str], body: dict) -> int:
    """One model's accounted memory in a pool of this kind (a probe pool, stopped after)."""
    name = sorted(repo.glob("*.onnx"))[0].stem
    server = start_pool(repo, work / "probe.log", "--grpc-port", "0", "--no-access-log", env=env)
    try:
        with server.client(timeout=120) as client:
            _timed_post(client, f"/v2/models/{name}/infer", body)
            rows = client.post("/v2/repository/index", json={}).json()
    finally:
        server.stop()
    return next(int(row["memory_bytes"]) for row in rows if row["name"] == name)


def _measure_pools(pools: list[Pool], paths: list[Path], body: dict, idle_s: float, args: Namespace) -> None:
    """Every model loaded and asked twice (cold, warm) in each pool; memory and CPU at idle;
    then the hop's cost on the first model: `--sequential` requests one at a time to the
    pools in turn (same neighbours for both), and a closed loop of `--connections` for
    `--loop-s` seconds on each pool in turn."""
    for pool in pools:
        with pool.server.client(timeout=120) as client:
            for path in paths:
                pool.cold.append(_timed_post(client, f"/v2/models/{path.stem}/infer", body))
                pool.warm.append(_timed_post(client, f"/v2/models/{path.stem}/infer", body))
    for pool in pools:
        pool.idle = measure_idle([pool.server.proc.pid], idle_s)
    first = f"/v2/models/{paths[0].stem}/infer"
    clients = [pool.server.client() for pool in pools]
    try:
        for _ in range(args.sequential):
            for pool, client in zip(pools, clients, strict=True):
                pool.one_by_one.append(_timed_post(client, first, body))
    finally:
        for client in clients:
            client.close()
    for pool in pools:
        pool.loop = drive(pool.server.url, [first], body, seconds=args.loop_s, clients=args.connections)


def _start_dedicated(paths: list[Path], work: Path, body: dict) -> list[Server]:
    """One `mserve serve` per model, started together, each ready and having answered once.
    A server that does not come up is started again on new ports: each picks its three ports
    at random below the ephemeral range, so servers starting together can pick the same one
    (the ones already listening are never picked, hence the waves)."""
    flags = ("--grpc-port", "0", "--no-access-log")
    servers = [start(p, p.stem, work / f"one-{p.stem}.log", *flags, wait_ready=False) for p in paths]
    for i, path in enumerate(paths):
        for attempt in range(3):
            try:
                wait_until_ready(servers[i], timeout=300)
                with servers[i].client() as client:
                    _timed_post(client, f"/v2/models/{path.stem}/infer", body)
                break
            except (AssertionError, httpx.HTTPError):
                servers[i].stop()
                if attempt == 2:
                    raise
                servers[i] = start(
                    path, path.stem, work / f"one-{path.stem}-{attempt}.log", *flags, wait_ready=False
                )
    return servers


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "n/a"


def _row(name: str, f: Footprint, idle_s: float) -> str:
    memory = " | ".join(f"{value / MIB:.0f}" for value in (f.rss, f.anon, f.pss, f.uss))
    return f"| {name} | {f.processes} | {memory} | {1000 * f.cpu_s / idle_s:.1f} |"


def _ratio_row(name: str, a: Footprint, b: Footprint) -> str:
    pairs = ((a.rss, b.rss), (a.anon, b.anon), (a.pss, b.pss), (a.uss, b.uss), (a.cpu_s, b.cpu_s))
    cells = " | ".join(_ratio(x, y) for x, y in pairs)
    return f"| **{name}** | {_ratio(a.processes, b.processes)} | {cells} |"


def run_size(size: str, count: int, work: Path, args: Namespace) -> list[str]:
    repo = work / f"repo-{size}"
    paths, body = build_models(size, count, repo, work)
    file_mib = paths[0].stat().st_size / MIB

    pools = _pools(repo, work, size, args.isolation, args.resident, body)
    try:
        _measure_pools(pools, paths, body, args.idle_s, args)
    finally:
        for pool in pools:
            pool.server.stop()

    alone: Footprint | None = None
    if not args.no_dedicated:
        dedicated: list[Server] = []
        try:
            for first in range(0, len(paths), START_WAVE):
                dedicated += _start_dedicated(paths[first : first + START_WAVE], work, body)
            alone = measure_idle([server.proc.pid for server in dedicated], args.idle_s)
        finally:
            for server in dedicated:
                server.stop()

    lines = [
        f"### {count} {size} models ({file_mib:.2f} MiB file each)",
        "",
        "| setup | processes | RSS MiB | anon MiB | PSS MiB | private MiB | idle CPU ms/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    if alone is not None:
        lines.append(_row(f"{count} dedicated `mserve serve`", alone, args.idle_s))
    lines += [_row(pool.label, pool.idle, args.idle_s) for pool in pools if pool.idle]
    if alone is not None:
        lines += [_ratio_row(f"dedicated / {pool.label}", alone, pool.idle) for pool in pools if pool.idle]
    if len(pools) == 2 and pools[0].idle and pools[1].idle:
        shared, isolated = pools[0].idle, pools[1].idle
        lines.append(_ratio_row(f"{pools[1].label} / {pools[0].label}", isolated, shared))
        loaded = args.resident or count
        extra = [(isolated.rss - shared.rss) / loaded, (isolated.anon - shared.anon) / loaded]
        extra += [(isolated.pss - shared.pss) / loaded, (isolated.uss - shared.uss) / loaded]
        lines += [
            "",
            f"Per loaded model, what the workers add ({pools[1].label} minus {pools[0].label}, / {loaded}): "
            f"RSS {extra[0] / MIB:.1f} MiB, anon {extra[1] / MIB:.1f} MiB, PSS {extra[2] / MIB:.1f} MiB, "
            f"private {extra[3] / MIB:.1f} MiB.",
        ]
    lines += [
        "",
        "| pool | cold p50 ms | cold p99 ms | warm p50 ms | one at a time: p50 ms | p99 ms "
        f"| {args.connections} connections, {args.loop_s:g} s: req/s | p50 ms | p99 ms | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for pool in pools:
        cells = " | ".join(f"{value:.2f}" for value in _latencies(pool))
        lines.append(f"| {pool.label} | {cells} | {(pool.loop or Run()).failed} |")
    if len(pools) == 2:
        pairs = zip(_latencies(pools[1]), _latencies(pools[0]), strict=True)
        ratios = " | ".join(_ratio(x, y) for x, y in pairs)
        lines.append(f"| **{pools[1].label} / {pools[0].label}** | {ratios} | |")
    lines.append("")
    return lines


def _latencies(pool: Pool) -> list[float]:
    """Cold p50/p99, warm p50, one-at-a-time p50/p99 (ms); closed loop req/s, p50, p99 (ms)."""
    loop = pool.loop or Run()
    ms = [statistics.median(pool.cold), percentile(pool.cold, 0.99), statistics.median(pool.warm)]
    ms += [statistics.median(pool.one_by_one), percentile(pool.one_by_one, 0.99)]
    return [1000 * value for value in ms] + [loop.rate, loop.p50_ms(), loop.p99_ms()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=10, help="models per setup (default 10)")
    parser.add_argument(
        "--sizes", default="small,minilm", help="comma-separated: small, minilm, minilm-int8 (the real model)"
    )
    parser.add_argument("--idle-s", type=float, default=3.0, help="idle window for the CPU figure")
    parser.add_argument(
        "--isolation",
        default="none,process",
        help="pool kinds, comma-separated: none (one process), process (a worker per model); default both",
    )
    parser.add_argument("--sequential", type=int, default=200, help="one-at-a-time requests per pool")
    parser.add_argument("--connections", type=int, default=8, help="closed-loop connections (hop cost)")
    parser.add_argument("--loop-s", type=float, default=3.0, help="closed-loop seconds per pool")
    parser.add_argument("--no-dedicated", action="store_true", help="pools only (N dedicated may not fit)")
    parser.add_argument(
        "--resident", type=int, default=0, help="overcommit: a budget for this many models (default: all)"
    )
    args = parser.parse_args()
    if args.resident < 0 or (args.resident and args.resident >= args.models):
        parser.error(f"--resident: {args.resident} must be between 1 and --models - 1 (or 0: every model)")
    kinds = [kind.strip() for kind in args.isolation.split(",")]
    if bad := [kind for kind in kinds if kind not in POOL_LABELS]:
        parser.error(f"--isolation: {', '.join(map(repr, bad))} not among {', '.join(POOL_LABELS)}")
    args.isolation = kinds
    with tempfile.TemporaryDirectory(prefix="mserve-pool-density-") as tmp:
        for size in args.sizes.split(","):
            print("\n".join(run_size(size.strip(), args.models, Path(tmp), args)), flush=True)


if __name__ == "__main__":
    main()
