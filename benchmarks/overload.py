"""Overload and no-regression benchmark of the runtime's admission control, in one run.

    python -m benchmarks.overload [--duration 60] [--factor 5] [--models tiny,mlp]
                                  [--config LABEL=SERVER_ARGS ...] [--rounds 3] [--seconds 4]
                                  [--baseline-ref main] [--skip-overload] [--skip-regression]
                                  [--skip-minilm] [--nice -15]

Overload, per model (tiny MLP 16-64-4 and MLP 1024-4096-4096-1024, batching 32 rows / 2 ms)
and per server configuration, one server process pinned to one CPU and every client to the
other (taskset), so that load generator and server do not fight for a core:
1. unloaded: one closed-loop connection (duration / 4);
2. capacity (with the first configuration only, reused by the others): a closed loop with
   CAPACITY_CLIENTS connections (duration / 2), never shed: its
   req/s is the capacity, its p99 the at-capacity p99;
3. overload: vegeta (hack/build.sh vegeta), an open loop offering `factor` x capacity for
   `duration` from at most CONNECTIONS keep-alive connections; its per-request results give
   admitted (200) and shed (503) latency separately; the server's own histograms give how much
   of the admitted latency was spent inside it (and of that, waiting for a model run); also
   the liveness probe's worst latency during it, the server's peak RSS (VmHWM), and one normal
   request right after.

Everything runs at `--nice` (default -15 as root) in its own scheduler autogroup, so that
other work on a shared machine does not starve the server and the load generator: the
measurement is of the server (load_process.run_at_priority).

No regression: tiny MLP at 32 connections and MiniLM-L6 batch 1 at 8 (REST binary), this
tree against `--baseline-ref` (its runtime exported with `git archive`, served from the same
venv), alternated A B A B for `--rounds`;
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
from typing import Any

import numpy as np

from benchmarks.http_load import binary_body, json_body, run_load
from benchmarks.load_process import (
    add_priority_option,
    cpu_s,
    peak_rss_mib,
    pinned,
    run_at_priority,
    run_vegeta,
)
from benchmarks.runtime import CACHE
from tests.support.models import build_tiny_mlp
from tests.support.serving import serving

ROOT = Path(__file__).resolve().parent.parent

BATCHING = ("--max-batch-size", "32", "--max-batch-delay-ms", "2")
POD_MEMORY_LIMIT_MIB = 1024  # the operator's default runtime memory limit (1Gi)
# The server on one CPU, every load generator on the other: they must not fight for a core.
SERVER_CPU, LOAD_CPU = 1, 0
# Closed-loop clients that measure capacity: one full batch (32 rows, one worker), which every
# configuration admits whatever its queue delay (admission.delay_floor), so none is shed.
CAPACITY_CLIENTS = 32


def _max_in_flight(logs: str) -> int:
    return int(re.search(r"max_in_flight=(\d+)", logs).group(1))


class _ProbeLiveness(threading.Thread):
    """GET /v2/health/live every 0.2 s while the overload runs; the slowest answer and any failure;
    and every second the server's limit on requests in flight (adaptive or not)."""

    def __init__(self, url: str, admin_url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.worst_ms, self.failures = url, threading.Event(), 0.0, 0
        self.admin_url = admin_url
        self.limits: list[float] = []

    def run(self) -> None:
        import httpx

        # One client for the whole run: a new one per call costs tens of ms of CPU (its SSL
        # context) on the load generator's CPU, every 0.2 s, which stalled vegeta and showed up
        # as the server's tail latency.
        with httpx.Client(timeout=5) as client:
            rounds = 0
            while not self.stop.wait(0.2):
                rounds += 1
                if rounds % 5 == 0:
                    text = _metrics_text(client, self.admin_url)
                    found = re.search(r"^mserve_requests_in_flight_limit\{[^}]*\} (\S+)$", text, re.M)
                    self.limits.extend([float(found.group(1))] if found else [])
                started = time.perf_counter()
                try:
                    ok = client.get(f"{self.url}/v2/health/live").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.failures += not ok
                self.worst_ms = max(self.worst_ms, 1000 * (time.perf_counter() - started))


def _metrics_text(client: Any, url: str) -> str:
    import httpx

    try:
        return client.get(f"{url}/metrics").text
    except httpx.HTTPError:
        return ""


def _buckets(url: str) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts of the server's own latency histograms (admitted requests only)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"mserve_request_duration_seconds": "server", "mserve_queue_wait_seconds": "queue"}
    found: dict[str, dict[float, float]] = {"server": {}, "queue": {}}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples if family.name in wanted else ():
            if sample.name.endswith("_bucket") and sample.labels.get("protocol", "rest") == "rest":
                found[wanted[family.name]][float(sample.labels["le"])] = sample.value
    return found


def _bucket_p99(before: dict[float, float], after: dict[float, float]) -> str:
    """The upper bound of the bucket holding the 99th percentile of what was observed in between."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0
    for le, count in counts:
        if total and count >= 0.99 * total:
            return f"<= {1000 * le:g}" if le != float("inf") else "> 10000"
    return "n/a"


def overload_case(
    work: Path,
    label: str,
    model: Path,
    body: bytes,
    duration: float,
    factor: float,
    extra: tuple[str, ...],
    env: dict[str, str] | None = None,
    capacity: dict | None = None,
) -> dict:
    """One server pinned to SERVER_CPU; every client (closed loops, vegeta, probe) on LOAD_CPU.
    With `capacity` (another configuration's), this one's is not measured: a server with an
    adaptive limit sheds part of a 32-connection closed loop, by design."""
    import httpx

    path = f"/v2/models/{label}/infer"
    with pinned({LOAD_CPU}), ExitStack() as stack:
        with pinned({SERVER_CPU}):  # the server and its threads inherit it
            server = stack.enter_context(
                serving(model, label, work / f"{label}.log", "--no-access-log", *BATCHING, *extra, env=env)
            )
        limit = _max_in_flight(server.logs())
        unloaded = run_load(server.port, path, body, 1, duration / 4, 10**9, warmup_s=1.0)
        if capacity is None:
            cpu_before = cpu_s(server.proc.pid)
            capacity = run_load(server.port, path, body, CAPACITY_CLIENTS, duration / 2, 10**9, warmup_s=1.0)
            # run_load's warm-up is not in its count: the CPU per request is a slight overestimate.
            capacity["cpu_us"] = 1e6 * (cpu_s(server.proc.pid) - cpu_before) / max(1, capacity["n"])
        probe = _ProbeLiveness(server.url, server.admin_url)
        probe.start()
        before = _buckets(server.admin_url)
        cpu_before = cpu_s(server.proc.pid)
        over = run_vegeta(f"{server.url}{path}", body, factor * capacity["rps"], duration, work, LOAD_CPU)
        over["cpu_s"] = cpu_s(server.proc.pid) - cpu_before
        inside = {
            part: _bucket_p99(before[part], counts) for part, counts in _buckets(server.admin_url).items()
        }
        probe.stop.set()
        probe.join()
        started = time.perf_counter()
        after = httpx.post(f"{server.url}{path}", content=body, timeout=30)
        after_ms = 1000 * (time.perf_counter() - started)
        rss = peak_rss_mib(server.proc.pid)
    return {
        "label": label,
        "limit": limit,
        "unloaded": unloaded,
        "capacity": capacity,
        "over": over,
        "probe_worst_ms": probe.worst_ms,
        "probe_failures": probe.failures,
        "limits": probe.limits,
        "after_status": after.status_code,
        "after_ms": after_ms,
        "peak_rss_mib": rss,
        "inside_p99_ms": inside,
    }


def _limit_range(limits: list[float]) -> str:
    """The adaptive limit's median and range over the overload (nothing when it never moved)."""
    if not limits or min(limits) == max(limits):
        return ""
    return f" (now {statistics.median(limits):.0f}, {min(limits):.0f}-{max(limits):.0f})"


def overload_table(cases: list[dict], factor: float) -> str:
    lines = [
        "| model | server | max in flight (adaptive: median, range) | unloaded p99 ms (c1) "
        "| capacity req/s (p99 ms; c32) "
        "| offered req/s | admitted req/s | admitted p50 / p99 ms | p99 vs unloaded "
        "| admitted p99 after the 1st s ms (vs unloaded) "
        "| in server: p99 ms, of it batch queue | 503 share | 503 p50 / p99 ms "
        "| server CPU: busy, us per 200 (capacity), us per 503 (est.) "
        "| live probe worst ms | peak RSS MiB | request right after |",
        "| --- | --- | ---: | ---: | --- | --- | ---: | --- | ---: | ---: | --- "
        "| ---: | --- | --- | ---: | ---: | --- |",
    ]
    nan = {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    for c in cases:
        over, status = c["over"], c["over"]["status"]
        ok, shed = status.get("200", nan), status.get("503", nan)
        settled = over["settled"].get("200", nan)["p99_ms"]
        other = {k: v["n"] for k, v in status.items() if k not in ("200", "503", "0")}
        failed = f" ({c['probe_failures']} failed)" if c["probe_failures"] else ""
        notes = (f"; other statuses {other}" if other else "") + (
            f"; {status['0']['n']} without an answer in 30 s" if "0" in status else ""
        )
        multiple = over["offered_rps"] / c["capacity"]["rps"]
        per_ok = c["capacity"]["cpu_us"]
        # What the refusals cost: the overload's CPU less what its admitted requests cost at capacity.
        per_shed = (1e6 * over["cpu_s"] - per_ok * ok["n"]) / max(1, shed["n"])
        cpu = f"{over['cpu_s'] / c['duration']:.0%}, {per_ok:.0f}, {per_shed:.0f}"
        lines.append(
            f"| {c['label']} | {c['config']} | {c['limit']}{_limit_range(c['limits'])} "
            f"| {c['unloaded']['p99_ms']:.1f} "
            f"| {c['capacity']['rps']:,.0f} ({c['capacity']['p99_ms']:.1f}) "
            f"| {over['offered_rps']:,.0f} ({multiple:.1f}x; {factor:g}x asked) "
            f"| {ok['n'] / c['duration']:,.0f} | {ok['p50_ms']:.1f} / {ok['p99_ms']:.1f} "
            f"| {ok['p99_ms'] / c['unloaded']['p99_ms']:.1f}x "
            f"| {settled:.1f} ({settled / c['unloaded']['p99_ms']:.1f}x) "
            f"| {c['inside_p99_ms']['server']}, {c['inside_p99_ms']['queue']} "
            f"| {shed['n'] / max(1, over['sent']):.0%} "
            f"| {shed['p50_ms']:.1f} / {shed['p99_ms']:.1f} | {cpu} "
            f"| {c['probe_worst_ms']:.0f}{failed} "
            f"| {c['peak_rss_mib']:.0f} of {POD_MEMORY_LIMIT_MIB} "
            f"| {c['after_status']} in {c['after_ms']:.0f} ms{notes} |"
        )
    return "\n".join(lines)


def export_baseline(ref: str, dest: Path) -> str:
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


def _regression_row(case: str, base: str, ours: str, ratios: list[float]) -> str:
    """One table row: the median ratio (ours over the baseline), each round's, and the verdict."""
    ratio = statistics.median(ratios)
    each = ", ".join(f"{r:.2f}" for r in ratios)
    verdict = "yes" if ratio >= 0.95 else "NO"
    return f"| {case} | {base} | {ours} | {ratio:.2f} ({each}) | >= 0.95 | {verdict} |"


def regression_rows(work: Path, ref: str, seconds: float, rounds: int, minilm: bool = True) -> list[str]:

    model = build_tiny_mlp(work / "tiny-regression.onnx")
    body = json_body({"x": np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)})
    baseline_path = export_baseline(ref, work / "baseline")
    # (case, model file, served name, body, headers, connections, server arguments)
    cases = [
        ("tiny MLP c32, batching off", model, "tiny", body, {}, 32, ()),
        ("tiny MLP c32, batching on (32 rows, 2 ms)", model, "tiny", body, {}, 32, BATCHING),
    ]
    if minilm:
        from tests.support.models import export_minilm, minilm_inputs

        feed = minilm_inputs(["mserve serves ONNX models over the V2 inference protocol."])
        minilm_body, headers = binary_body(feed, dict.fromkeys(feed, "INT64"))
        path = export_minilm(CACHE / "bench" / "minilm-l6.onnx")
        cases.append(("MiniLM-L6 b1 seq128, REST binary, c8", path, "minilm", minilm_body, headers, 8, ()))
    rows = []
    for number, (case, served, name, payload, headers, connections, extra) in enumerate(cases):
        with ExitStack() as stack:
            ours = stack.enter_context(
                serving(served, name, work / f"ours-{number}.log", "--no-access-log", *extra)
            )
            theirs = stack.enter_context(
                serving(
                    served,
                    name,
                    work / f"base-{number}.log",
                    "--no-access-log",
                    *extra,
                    env={"PYTHONPATH": baseline_path},
                )
            )
            ratios, ours_rps, base_rps = [], [], []
            route = f"/v2/models/{name}/infer"
            for _ in range(rounds):
                base = run_load(theirs.port, route, payload, connections, seconds, 10**9, headers, 1.0)
                mine = run_load(ours.port, route, payload, connections, seconds, 10**9, headers, 1.0)
                base_rps.append(base["rps"])
                ours_rps.append(mine["rps"])
                ratios.append(mine["rps"] / base["rps"])
        base_cell, ours_cell = f"{statistics.median(base_rps):,.0f}", f"{statistics.median(ours_rps):,.0f}"
        rows.append(_regression_row(case, base_cell, ours_cell, ratios))
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
        base_cell = f"{statistics.median(costs['base']):.1f} us"
        ours_cell = f"{statistics.median(costs['ours']):.1f} us"
        case = f"tiny MLP, 32 concurrent, in-process CPU us/request, {config}"
        rows.append(_regression_row(case, base_cell, ours_cell, ratios))
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
    parser.add_argument("--models", default="tiny,mlp", help="models to overload: tiny, mlp or both")
    parser.add_argument(
        "--config",
        action="append",
        metavar="LABEL=SERVER_ARGS",
        help="a server configuration to overload, e.g. 'count only=--max-queue-delay-ms 0', or another "
        "tree's runtime first: 'before=@main' (repeatable; each model is overloaded once per "
        "configuration, in the same run, at a multiple of the capacity measured with the first, "
        "which must not shed 32 connections; default: the defaults)",
    )
    parser.add_argument("--skip-overload", action="store_true")
    parser.add_argument("--skip-regression", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true", help="no MiniLM row in the no-regression table")
    add_priority_option(parser)
    args = parser.parse_args()
    priority = run_at_priority(args.nice)

    print(f"# {os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.1f}, {priority}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mserve-overload-") as tmp:
        work = Path(tmp)
        models = []
        wanted = [] if args.skip_overload else args.models.split(",")
        if "tiny" in wanted:
            tiny = build_tiny_mlp(work / "tiny.onnx")
            models.append(("tiny", tiny, np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)))
        if "mlp" in wanted:
            big = build_tiny_mlp(work / "mlp.onnx", sizes=(1024, 4096, 4096, 1024))
            models.append(("mlp", big, np.linspace(-1, 1, 1024, dtype=np.float32).reshape(1, 1024)))
        cases = []
        configs = [c.partition("=") for c in args.config or ["defaults="]]
        for label, model, x in models:
            for config, _, server_args in configs:
                body = json_body({"x": x})
                words, env = server_args.split(), None
                if words and words[0].startswith("@"):  # another tree's runtime, e.g. "@main"
                    env = {"PYTHONPATH": export_baseline(words.pop(0)[1:], work / f"tree-{config}")}
                first = next((c["capacity"] for c in cases if c["label"] == label), None)
                case = overload_case(
                    work, label, model, body, args.duration, args.factor, tuple(words), env, first
                )
                case.update(duration=args.duration, config=config)
                cases.append(case)
                print(f"# {label}: {case}", flush=True)
        if cases:  # before the no-regression rows, which stop the run at a non-200 answer
            print(overload_table(cases, args.factor), flush=True)
        regression = []
        if not args.skip_regression:
            regression = regression_rows(
                work, args.baseline_ref, args.seconds, args.rounds, not args.skip_minilm
            )
    print(f"# load average after {os.getloadavg()[0]:.1f}")
    print(f"# {priority}; server on CPU {SERVER_CPU}, clients and vegeta on CPU {LOAD_CPU}")
    if regression:
        print()
        print("\n".join(regression))


if __name__ == "__main__":
    main()
