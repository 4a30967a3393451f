"""What one 503 costs the server: CPU time per refused request, every request refused.

    python -m benchmarks.refusal_cost [--rate 3000] [--seconds 10]
                                      [--config LABEL=SERVER_ARGS ...]   (e.g. 'before=@main')

Per configuration, one `mserve serve` of the tiny MLP pinned to one CPU with one slot
(`--max-in-flight 1`) held by a request whose batch waits ten minutes, so that every other
inference request is refused; vegeta (pinned to the other CPU, as in overload.py) offers
`rate` requests/s from at most 512 keep-alive connections. The server's CPU seconds (user +
system, all threads, /proc) over the refusals it answered is the cost of one refusal: unlike
latency and req/s it hardly depends on how much of the core the neighbours leave the server.
Configurations are alternated A B A B for `--rounds`.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from benchmarks.http_load import json_body
from benchmarks.load_process import add_priority_option, cpu_s, pinned, run_at_priority, run_vegeta
from benchmarks.overload import LOAD_CPU, SERVER_CPU, export_baseline
from tests.support.models import build_tiny_mlp
from tests.support.serving import serving

HOLD = ("--max-in-flight", "1", "--max-batch-size", "64", "--max-batch-delay-ms", "600000")


def refusal_cost(work: Path, model: Path, body: bytes, rate: float, seconds: float, words: list[str]) -> dict:
    """Serve with the slot held, offer `rate` for `seconds`: CPU us per 503 and 503 latency."""
    env = None
    if words and words[0].startswith("@"):  # another tree's runtime, e.g. "@main"
        env = {"PYTHONPATH": export_baseline(words.pop(0)[1:], work / "tree")}
    path = "/v2/models/tiny/infer"
    with pinned({LOAD_CPU}), ExitStack() as stack:
        with pinned({SERVER_CPU}):
            server = stack.enter_context(
                serving(model, "tiny", work / "tiny.log", "--no-access-log", *HOLD, *words, env=env)
            )
        holder = stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
        holder.sendall(head.encode() + b"\r\n\r\n" + body)  # admitted; its answer is never read
        before = cpu_s(server.proc.pid)
        over = run_vegeta(f"{server.url}{path}", body, rate, seconds, work, LOAD_CPU)
        used_s = cpu_s(server.proc.pid) - before
    shed = over["status"].get("503", {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan")})
    other = {code: v["n"] for code, v in over["status"].items() if code != "503"}
    cost_us = 1e6 * used_s / max(1, shed["n"])
    return {"cpu_us": cost_us, "busy": used_s / seconds, "shed": shed, "other": other}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=3000.0, help="requests/s offered")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per configuration and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--config", action="append", metavar="LABEL=SERVER_ARGS")
    add_priority_option(parser)
    args = parser.parse_args()
    priority = run_at_priority(args.nice)
    configs = [c.partition("=") for c in args.config or ["this tree="]]
    print(f"# {os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.1f}, {priority}", flush=True)
    results: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
    with tempfile.TemporaryDirectory(prefix="mserve-refusal-") as tmp:
        work = Path(tmp)
        model = build_tiny_mlp(work / "tiny.onnx")
        body = json_body({"x": np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)})
        for _ in range(args.rounds):
            for label, _, server_args in configs:
                result = refusal_cost(work, model, body, args.rate, args.seconds, server_args.split())
                results[label].append(result)
                print(f"# {label}: {result}", flush=True)
    print(f"# load average after {os.getloadavg()[0]:.1f}")
    first = statistics.median(r["cpu_us"] for r in results[configs[0][0]])
    print(
        f"| server | CPU us per 503, median (rounds) | vs {configs[0][0]} | refusals/s one core could answer "
        "| server CPU busy | 503 p50 / p99 ms | other answers |"
    )
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for label, runs in results.items():
        cost = statistics.median(r["cpu_us"] for r in runs)
        each = ", ".join(f"{r['cpu_us']:.0f}" for r in runs)
        p50 = statistics.median(r["shed"]["p50_ms"] for r in runs)
        p99 = statistics.median(r["shed"]["p99_ms"] for r in runs)
        busy = statistics.median(r["busy"] for r in runs)
        other = [r["other"] for r in runs if r["other"]]
        print(
            f"| {label} | {cost:.1f} ({each}) | {cost / first:.2f} | {1e6 / cost:,.0f} | {busy:.0%} "
            f"| {p50:.1f} / {p99:.1f} | {other or 'none'} |"
        )


if __name__ == "__main__":
    main()
