"""Overload and no-regression benchmark of the runtime's admission control, in one run.

    python benchmarks/overload.py [--duration 60] [--factor 5] [--rounds 3] [--seconds 4]
                                  [--baseline-ref main] [--skip-big] [--skip-regression]

Overload, per model (tiny MLP 16-64-4 and MLP 1024-4096-4096-1024, batching 32 rows / 2 ms,
default max_in_flight), all against one server process:
1. unloaded: one closed-loop connection (duration / 4);
2. capacity: a closed loop with max_in_flight connections, the most the server admits, so
   nothing is shed (duration / 2): its req/s is the capacity, its p99 the at-capacity p99;
3. overload: an open loop (open_load.py) offering `factor` x capacity for `duration`;
   admitted p99 against (1) and (2), share and latency of the 503s, liveness probe latency
   during it, the server's peak RSS (VmHWM), and one normal request right after.

No regression: tiny MLP at 32 connections, this tree against `--baseline-ref` (its runtime
exported with `git archive`, served from the same venv), alternated A B A B for `--rounds`;
and, because HTTP req/s on a shared machine mostly measures the neighbours, the CPU time per
request of each tree's whole ASGI app in-process (asgi_cpu.py), alternated the same way.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import json_body, run_load  # noqa: E402
from open_load import run_open_load  # noqa: E402

BATCHING = ("--max-batch-size", "32", "--max-batch-delay-ms", "2")
POD_MEMORY_LIMIT_MIB = 1024  # the operator's default runtime memory limit (1Gi)


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024


def _max_in_flight(logs: str) -> int:
    return int(re.search(r"max_in_flight=(\d+)", logs).group(1))


class _ProbeLiveness(threading.Thread):
    """GET /v2/health/live every 0.2 s while the overload runs; the slowest answer and any failure."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.worst_ms, self.failures = url, threading.Event(), 0.0, 0

    def run(self) -> None:
        import httpx

        while not self.stop.wait(0.2):
            started = time.perf_counter()
            try:
                ok = httpx.get(f"{self.url}/v2/health/live", timeout=5).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.failures += not ok
            self.worst_ms = max(self.worst_ms, 1000 * (time.perf_counter() - started))


def overload_case(work: Path, label: str, model: Path, body: bytes, duration: float, factor: float) -> dict:
    import httpx
    from served import serving

    path = f"/v2/models/{label}/infer"
    with serving(model, label, work / f"{label}.log", "--no-access-log", *BATCHING) as server:
        limit = _max_in_flight(server.logs())
        unloaded = run_load(server.port, path, body, 1, duration / 4, 10**9, warmup_s=1.0)
        capacity = run_load(server.port, path, body, limit, duration / 2, 10**9, warmup_s=1.0)
        probe = _ProbeLiveness(server.url)
        probe.start()
        connections = min(1000, max(256, 4 * limit))
        over = run_open_load(server.port, path, body, factor * capacity["rps"], duration, connections)
        probe.stop.set()
        probe.join()
        started = time.perf_counter()
        after = httpx.post(f"{server.url}{path}", content=body, timeout=30)
        after_ms = 1000 * (time.perf_counter() - started)
        rss = _peak_rss_mib(server.proc.pid)
        shed_total = re.search(
            r'mserve_requests_shed_total\{[^}]*protocol="rest"\} (\S+)',
            httpx.get(f"{server.url}/metrics").text,
        )
    return {
        "label": label,
        "limit": limit,
        "unloaded": unloaded,
        "capacity": capacity,
        "over": over,
        "probe_worst_ms": probe.worst_ms,
        "probe_failures": probe.failures,
        "after_status": after.status_code,
        "after_ms": after_ms,
        "peak_rss_mib": rss,
        "shed_counter": float(shed_total.group(1)) if shed_total else 0.0,
    }


def overload_table(cases: list[dict], factor: float) -> str:
    lines = [
        "| model | max in flight | unloaded p99 ms (c1) | capacity req/s (p99 ms) | offered req/s | "
        "admitted req/s | admitted p99 ms | vs unloaded | vs at-capacity | 503 share | 503 p50 / p99 ms | "
        "live probe worst ms | peak RSS MiB | request right after |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for c in cases:
        over, status = c["over"], c["over"]["status"]
        ok, shed = status.get("200", {"n": 0, "p99_ms": float("nan")}), status.get("503", {"n": 0})
        seconds = c["duration"]
        other = {k: v["n"] for k, v in status.items() if k not in ("200", "503")}
        failed = f" ({c['probe_failures']} failed)" if c["probe_failures"] else ""
        probe = f"{c['probe_worst_ms']:.0f}{failed}"
        notes = (f"; other statuses {other}" if other else "") + (
            f"; {over['unanswered']} unanswered, {over['connections_lost']} connections closed"
            if over["unanswered"] or over["connections_lost"]
            else ""
        )
        multiple = over["offered_rps"] / c["capacity"]["rps"]
        lines.append(
            f"| {c['label']} | {c['limit']} | {c['unloaded']['p99_ms']:.1f} "
            f"| {c['capacity']['rps']:,.0f} ({c['capacity']['p99_ms']:.1f}) "
            f"| {over['offered_rps']:,.0f} ({multiple:.1f}x; {factor:g}x asked) "
            f"| {ok['n'] / seconds:,.0f} | {ok['p99_ms']:.1f} "
            f"| {ok['p99_ms'] / c['unloaded']['p99_ms']:.1f}x "
            f"| {ok['p99_ms'] / c['capacity']['p99_ms']:.2f}x "
            f"| {shed['n'] / max(1, over['answered']):.0%} "
            f"| {shed.get('p50_ms', float('nan')):.1f} / {shed.get('p99_ms', float('nan')):.1f} "
            f"| {probe} "
            f"| {c['peak_rss_mib']:.0f} of {POD_MEMORY_LIMIT_MIB} "
            f"| {c['after_status']} in {c['after_ms']:.0f} ms{notes} |"
        )
    return "\n".join(lines)


def _export_baseline(ref: str, dest: Path) -> str:
    """The runtime as of `ref`, as a PYTHONPATH (git archive: no checkout, no worktree)."""
    dest.mkdir(parents=True, exist_ok=True)
    command = ["git", "-C", str(ROOT), "archive", ref, "runtime", "cli", "contract"]
    archive = subprocess.run(command, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    os.environ.setdefault("MSERVE_BASELINE_SHA", sha)
    return os.pathsep.join(str(dest / part) for part in ("cli", "contract", "runtime"))


def regression_rows(work: Path, ref: str, seconds: float, rounds: int) -> list[str]:
    from models import build_tiny_mlp
    from served import serving

    model = build_tiny_mlp(work / "tiny-regression.onnx")
    body = json_body({"x": np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)})
    baseline_path = _export_baseline(ref, work / "baseline")
    rows = []
    for config, extra in (("batching off", ()), ("batching on (32 rows, 2 ms)", BATCHING)):
        with ExitStack() as stack:
            ours = stack.enter_context(
                serving(model, "tiny", work / f"ours-{len(extra)}.log", "--no-access-log", *extra)
            )
            theirs = stack.enter_context(
                serving(
                    model,
                    "tiny",
                    work / f"base-{len(extra)}.log",
                    "--no-access-log",
                    *extra,
                    env={"PYTHONPATH": baseline_path},
                )
            )
            ratios, ours_rps, base_rps = [], [], []
            for _ in range(rounds):
                base = run_load(theirs.port, "/v2/models/tiny/infer", body, 32, seconds, 10**9, warmup_s=1.0)
                mine = run_load(ours.port, "/v2/models/tiny/infer", body, 32, seconds, 10**9, warmup_s=1.0)
                base_rps.append(base["rps"])
                ours_rps.append(mine["rps"])
                ratios.append(mine["rps"] / base["rps"])
        ratio = statistics.median(ratios)
        each = ", ".join(f"{r:.2f}" for r in ratios)
        rows.append(
            f"| tiny MLP c32, {config} | {statistics.median(base_rps):,.0f} "
            f"| {statistics.median(ours_rps):,.0f} | {ratio:.2f} ({each}) | >= 0.95 "
            f"| {'yes' if ratio >= 0.95 else 'NO'} |"
        )
    here = os.pathsep.join(str(ROOT / part) for part in ("cli", "contract", "runtime"))
    for config, size in (("batching off", 1), ("batching on (32 rows, 2 ms)", 32)):
        costs: dict[str, list[float]] = {"base": [], "ours": []}
        for _ in range(rounds):
            for side, path in (("base", baseline_path), ("ours", here)):
                command = [sys.executable, str(ROOT / "benchmarks" / "asgi_cpu.py"), str(model), str(size)]
                env = {**os.environ, "PYTHONPATH": path}
                out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
                costs[side].append(float(out.stdout.split()[-1]))
        ratios = [b / o for b, o in zip(costs["base"], costs["ours"], strict=True)]
        ratio = statistics.median(ratios)
        each = ", ".join(f"{r:.2f}" for r in ratios)
        rows.append(
            f"| tiny MLP, 32 concurrent, in-process CPU us/request, {config} "
            f"| {statistics.median(costs['base']):.1f} us | {statistics.median(costs['ours']):.1f} us "
            f"| {ratio:.2f} ({each}) | >= 0.95 | {'yes' if ratio >= 0.95 else 'NO'} |"
        )
    return [
        f"| case | {ref} ({os.environ['MSERVE_BASELINE_SHA']}) | this tree "
        "| ratio (req/s, or baseline CPU / ours), median (rounds) | target | met |",
        "| --- | ---: | ---: | --- | --- | --- |",
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="overload seconds (full run: 60)")
    parser.add_argument("--factor", type=float, default=5.0, help="offered load as a multiple of capacity")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per no-regression load run")
    parser.add_argument("--rounds", type=int, default=3, help="alternations per no-regression comparison")
    parser.add_argument("--baseline-ref", default="main", help="git ref of the no-regression baseline")
    parser.add_argument("--skip-big", action="store_true", help="only the tiny MLP under overload")
    parser.add_argument("--skip-overload", action="store_true")
    parser.add_argument("--skip-regression", action="store_true")
    args = parser.parse_args()
    from models import build_tiny_mlp

    print(f"# {os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mserve-overload-") as tmp:
        work = Path(tmp)
        tiny = build_tiny_mlp(work / "tiny.onnx")
        models = [("tiny", tiny, np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16))]
        if args.skip_overload:
            models = []
        elif not args.skip_big:
            big = build_tiny_mlp(work / "mlp.onnx", sizes=(1024, 4096, 4096, 1024))
            models.append(("mlp", big, np.linspace(-1, 1, 1024, dtype=np.float32).reshape(1, 1024)))
        cases = []
        for label, model, x in models:
            case = overload_case(work, label, model, json_body({"x": x}), args.duration, args.factor)
            case["duration"] = args.duration
            cases.append(case)
            print(f"# {label}: {case}", flush=True)
        regression = []
        if not args.skip_regression:
            regression = regression_rows(work, args.baseline_ref, args.seconds, args.rounds)
    print(f"# load average after {os.getloadavg()[0]:.1f}")
    if cases:
        print(overload_table(cases, args.factor))
    if regression:
        print()
        print("\n".join(regression))


if __name__ == "__main__":
    main()
