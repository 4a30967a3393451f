"""Served throughput against a raw `session.run` loop with onnxruntime's own default options.

    python benchmarks/served_vs_raw.py [--seconds 3] [--rounds 3] [--skip-minilm]
        [--variant NAME=JSON ...]

| case                                  | baseline (same run)                          | target         |
| MiniLM b1 seq128, c8, REST binary     | session.run loop, onnxruntime's defaults     | >= 0.90 of raw |
| MLP 1024-4096-4096-1024 b1, c8, REST  | session.run loop, onnxruntime's defaults     | >= 0.90 of raw |

The baseline opens its session with `ort.InferenceSession(path)` and nothing else: it
carries none of mserve's choices. A second raw loop opens it as the runtime does by default,
to show what the session options alone do. The server runs with its defaults (no recorded
session options); again with what the optimizer's session search records for this model,
when that differs; and, per `--variant`, with `MSERVE_SESSION_OPTIONS` set to that JSON
(e.g. `spinning='{"allow_spinning": true}'`), which is how the runtime's defaults were
chosen. Sides alternate for `--rounds` rounds, all servers up the whole time; each row is
the median of its rounds, its ratio the median of the per-round ratios to the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import binary_body, run_load  # noqa: E402

CACHE = Path(os.environ.get("MSERVE_CACHE", Path.home() / ".cache" / "mserve"))
CONNECTIONS = 8
TARGET = 0.90


def raw_loop(model: Path, feed: dict[str, np.ndarray], seconds: float, runtime_defaults: bool) -> dict:
    """session.run in a loop in this process: onnxruntime's defaults, or the runtime's."""
    import onnxruntime as ort
    from mserve_runtime.onnx_model import build_session, session_config
    from mserve_runtime.settings import RuntimeSettings

    if runtime_defaults:
        session = build_session(str(model), session_config(RuntimeSettings()))
    else:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for _ in range(5):
        session.run(None, feed)
    lat = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        session.run(None, feed)
        lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    lat.sort()
    return {"rps": len(lat) / elapsed, "p50_ms": 1000 * lat[len(lat) // 2]}


def compare(
    case: str,
    model: Path,
    feed: dict[str, np.ndarray],
    datatypes: dict[str, str],
    variants: dict[str, str],
    work: Path,
    seconds: float,
    rounds: int,
) -> list[str]:
    from mserve_optimizer.session_search import measure
    from served import serving

    body, headers = binary_body(feed, datatypes)
    sides: dict[str, Callable[[], dict]] = {
        "raw session.run loop, onnxruntime defaults": lambda: raw_loop(model, feed, seconds, False),
        "raw session.run loop, runtime defaults": lambda: raw_loop(model, feed, seconds, True),
    }
    chosen, _, why = measure(model, feed)
    served = {"runtime defaults": None}
    if chosen != type(chosen)():
        served[f"optimizer's choice: {why}"] = chosen.model_dump_json()
    with ExitStack() as stack:
        for label, options in {**served, **variants}.items():
            env = {"MSERVE_SESSION_OPTIONS": options} if options else {}
            server = stack.enter_context(
                serving(model, "m", work / f"{case[:6]}-{len(sides)}.log", "--no-access-log", env=env)
            )
            sides[f"mserve REST binary c{CONNECTIONS}, {label}"] = lambda port=server.port: run_load(
                port, "/v2/models/m/infer", body, CONNECTIONS, seconds, 1_000_000, headers, 1.0
            )
        results: dict[str, list[dict]] = {label: [] for label in sides}
        ratios: dict[str, list[float]] = {label: [] for label in sides}
        for _ in range(rounds):
            for label, side in sides.items():
                results[label].append(side())
            raw = next(iter(results.values()))[-1]["rps"]
            for label in sides:
                ratios[label].append(results[label][-1]["rps"] / raw)
    rows = []
    for label in sides:
        rps = statistics.median(r["rps"] for r in results[label])
        p50 = statistics.median(r["p50_ms"] for r in results[label])
        ratio = statistics.median(ratios[label])
        served = label.startswith("mserve")
        met = ("yes" if ratio >= TARGET else "NO") if served else ""
        target = f">= {TARGET:.2f}" if served else ""
        rows.append(f"| {case} | {label} | {rps:,.1f} | {p50:.2f} | {ratio:.2f} | {target} | {met} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per side and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternations per comparison")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=JSON", help="also serve with these options"
    )
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant)
    from models import build_tiny_mlp, export_minilm, minilm_inputs

    print(f"# served vs raw: {os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.1f}", flush=True)
    rows = [
        "| case | configuration | req/s | p50 ms | ratio to raw | target | met |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="mserve-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_minilm:
            model = export_minilm(CACHE / "bench" / "minilm-l6.onnx")
            feed = minilm_inputs(["mserve serves ONNX models over the V2 inference protocol."])
            datatypes = dict.fromkeys(feed, "INT64")
            rows += compare(
                "MiniLM b1 seq128", model, feed, datatypes, variants, work, args.seconds, args.rounds
            )
        model = build_tiny_mlp(work / "mlp.onnx", sizes=(1024, 4096, 4096, 1024))
        feed = {"x": np.linspace(-1, 1, 1024, dtype=np.float32).reshape(1, 1024)}
        rows += compare(
            "MLP 1024-4096-4096-1024 b1",
            model,
            feed,
            {"x": "FP32"},
            variants,
            work,
            args.seconds,
            args.rounds,
        )
    print(f"# load average after {os.getloadavg()[0]:.1f}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
