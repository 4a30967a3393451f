"""What a canary rollout costs the stable pods: the rollout file's presence, the forward hop
and mirroring, each against the same stable serving alone, in one run.

    python -m benchmarks.canary_cost [--duration 3] [--rounds 2] [--connections 8]

Three `mserve serve` processes of the tiny MLP (one intra-op thread, batching up to 32):
a stable without `--rollout-file` (the baseline), a stable with it, and a canary. Cells,
measured in turn (baseline first) for `--rounds`, from a separate closed-loop client process
(benchmarks/http_load.py), JSON requests to the stable:
- stable alone (no rollout file);
- rollout file present, `weight: 0` (the wrapped handler's one attribute check);
- `weight: 10` (a tenth of requests take the hop to the canary and back);
- `mirrorPercent: 20` (a fifth also go to the canary off the response path, and are compared).
Prints the medians of req/s, p50, p99 and the stable's CPU time per request (/proc; requests
from its own counters), and their ratios to the baseline of the same round: CPU per request
is what neighbours on a shared machine move least.
Not a timed test: on a shared machine compare the ratios of one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.http_load import json_body, run_load
from benchmarks.load_process import cpu_s
from tests.support.models import build_tiny_mlp
from tests.support.serving import Server, serving

COMMON = ("--no-access-log", "--threads", "1", "--max-batch-size", "32", "--max-batch-delay-ms", "2")
PATH = "/v2/models/tiny/infer"


def _apply(stable: Server, path: Path, generation: int, canary: dict | None) -> None:
    """Write the rollout file (renamed over, as the kubelet does) and wait until it is applied."""
    path.with_suffix(".tmp").write_text(json.dumps({"generation": generation, "canary": canary}))
    os.replace(path.with_suffix(".tmp"), path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = httpx.get(f"{stable.admin_url}/metrics", timeout=5).text
        if re.search(rf"^mserve_rollout_generation {generation}\.0$", text, re.MULTILINE):
            return
        time.sleep(0.05)
    raise RuntimeError(f"rollout generation {generation} not applied within 10 s")


def _counter(server: Server, pattern: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{pattern} (\S+)$", server.metrics(), re.MULTILINE))


def _requests(server: Server) -> float:
    """Inference requests the stable answered: served here, or forwarded and answered there."""
    served = _counter(server, r'mserve_requests_total\{model="tiny",protocol="rest",status="\d+"\}')
    return served + _counter(server, r'mserve_canary_forwarded_total\{outcome="answered"\}')


def _requests(server: Server) -> float:
    """Inference requests the stable answered: served here, or forwarded and answered there."""
    served = _counter(server, r'mserve_requests_total\{model="tiny",protocol="rest",status="\d+"\}')
    return served + _counter(server, r'mserve_canary_forwarded_total\{outcome="answered"\}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of each measured run")
    parser.add_argument("--rounds", type=int, default=2, help="times each cell is measured")
    parser.add_argument("--connections", type=int, default=8, help="client connections")
    args = parser.parse_args()

    print(f"# {os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mserve-canary-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        model = build_tiny_mlp(work / "tiny.onnx")
        body = json_body({"x": np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)})
        rollout = work / "rollout.json"

        def start(label: str, *extra: str, version: str = "1") -> Server:
            env = {"MSERVE_MODEL_VERSION": version}
            return stack.enter_context(
                serving(model, "tiny", work / f"{label}.log", *COMMON, *extra, env=env)
            )

        alone = start("alone")
        stable = start("stable", "--rollout-file", str(rollout))
        canary = start("canary", version="2")
        cells = [
            ("stable alone (no rollout file)", alone, None),
            ("rollout file, weight 0", stable, {"weight": 0, "mirrorPercent": 0}),
            ("weight 10", stable, {"weight": 10, "mirrorPercent": 0}),
            ("mirror 20%", stable, {"weight": 0, "mirrorPercent": 20}),
        ]
        runs: dict[str, list[dict]] = {label: [] for label, _, _ in cells}
        generation = 0
        for _ in range(args.rounds):
            for label, server, split in cells:
                if split is not None:
                    generation += 1
                    _apply(server, rollout, generation, {"url": canary.url, "revision": 2, **split})
                cpu, done = cpu_s(server.proc.pid), _requests(server)
                result = run_load(
                    server.port, PATH, body, args.connections, args.duration, 10**7, warmup_s=0.5
                )
                result["cpu_us"] = 1e6 * (cpu_s(server.proc.pid) - cpu) / max(1.0, _requests(server) - done)
                runs[label].append(result)
                print(
                    f"# {label}: {result['rps']:.0f} req/s, p99 {result['p99_ms']:.2f} ms, "
                    f"stable CPU {result['cpu_us']:.0f} us/req",
                    flush=True,
                )
        forwarded = _counter(stable, r'mserve_canary_forwarded_total\{outcome="\w+"\}')
        compared = _counter(stable, r'mserve_shadow_comparisons_total\{result="\w+"\}')
        dropped = _counter(stable, "mserve_shadow_dropped_total")
        forward_s = _counter(stable, "mserve_canary_forward_duration_seconds_sum")

    base = runs[cells[0][0]]
    print(f"# load average after {os.getloadavg()[0]:.1f}")
    print(f"\n{args.connections} connections, {args.duration:g} s per run, {args.rounds} rounds (medians)\n")
    print(
        "| configuration | req/s | p50 ms | p99 ms | stable CPU us/req "
        "| req/s vs alone | p99 vs alone | CPU/req vs alone |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, _, _ in cells:
        rs = runs[label]
        rps = statistics.median(r["rps"] / b["rps"] for r, b in zip(rs, base, strict=True))
        p99 = statistics.median(r["p99_ms"] / b["p99_ms"] for r, b in zip(rs, base, strict=True))
        cpu = statistics.median(r["cpu_us"] / b["cpu_us"] for r, b in zip(rs, base, strict=True))
        print(
            f"| {label} | {statistics.median(r['rps'] for r in rs):.0f} "
            f"| {statistics.median(r['p50_ms'] for r in rs):.2f} "
            f"| {statistics.median(r['p99_ms'] for r in rs):.2f} "
            f"| {statistics.median(r['cpu_us'] for r in rs):.0f} | {rps:.3f} | {p99:.3f} | {cpu:.3f} |"
        )
    mean_ms = 1000 * forward_s / forwarded if forwarded else float("nan")
    print(
        f"\nforwarded {forwarded:.0f} (mean {mean_ms:.2f} ms each, as the stable saw it); "
        f"mirrored and compared {compared:.0f}, dropped {dropped:.0f}"
    )


if __name__ == "__main__":
    main()
