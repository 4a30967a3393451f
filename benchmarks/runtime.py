"""Benchmark of the mserve runtime against its baselines, measured in one run on this machine.

    python benchmarks/runtime.py [--seconds 4] [--rounds 3] [--skip-minilm] [--skip-mlserver]
                                 [--baseline-tree DIR [--baseline-only]]

| case                               | baseline (same run)                     | target           |
| MiniLM b1, c8, REST binary         | raw onnxruntime session.run loop        | >= 0.90 of raw   |
| tiny MLP c32, batching on          | the same server, batching off           | >= 3x req/s      |
| tiny MLP c32                       | MLServer 1.7.1 + adaptive batching      | >= 2x req/s      |
| 1x128x384 fp32, c1                 | JSON encoding vs binary extension       | report the ratio |
| tiny MLP c32 (--baseline-tree)     | the same server from another checkout   | >= 0.95 req/s    |

Load comes from a separate client process (http_load.py), bounded by a request count and a
duration. The machines are shared and noisy, so each comparison runs its two sides in
alternation (A B A B ...) for `--rounds` rounds, both servers up the whole time, and reports
the median of each side and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import binary_body, json_body, run_load  # noqa: E402

CACHE = Path(os.environ.get("MSERVE_CACHE", Path.home() / ".cache" / "mserve"))
TINY = "tiny MLP 16-64-4, JSON"


@dataclass
class Row:
    case: str
    config: str
    rps: float
    p50: float
    p99: float
    ratio: str = ""
    target: str = ""
    met: str = ""


def _row(case: str, config: str, r: dict, ratio: str = "", target: str = "", met: str = "") -> Row:
    return Row(case, config, r["rps"], r["p50_ms"], r["p99_ms"], ratio, target, met)


def alternate(a: Callable[[], dict], b: Callable[[], dict], rounds: int) -> tuple[dict, dict, float]:
    """Run a, b, a, b, ...; the median result of each side and the median of the b/a ratios."""
    runs_a, runs_b, ratios = [], [], []
    for _ in range(rounds):
        runs_a.append(a())
        runs_b.append(b())
        ratios.append(runs_b[-1]["rps"] / runs_a[-1]["rps"])

    def median(runs: list[dict]) -> dict:
        return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}

    return median(runs_a), median(runs_b), statistics.median(ratios)


def raw_session_loop(
    model: Path, feed: dict[str, np.ndarray], threads: int, seconds: float, server_options: bool
) -> dict:
    """Baseline: session.run in a loop in this process (no server), same intra-op threads.

    `server_options` opens the session exactly as mserve does (thread spinning off);
    otherwise with onnxruntime's defaults.
    """
    import onnxruntime as ort
    from mserve_runtime.onnx_model import SessionConfig, build_session

    if server_options:
        session = build_session(str(model), SessionConfig(threads=threads))
    else:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
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
    return {
        "rps": len(lat) / elapsed,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
    }


def bench_minilm(work: Path, seconds: float, rounds: int, threads: int) -> list[Row]:
    from models import export_minilm, minilm_inputs
    from served import serving

    model = export_minilm(CACHE / "bench" / "minilm-l6.onnx")
    feed = minilm_inputs(["mserve serves ONNX models over the V2 inference protocol."])
    body, headers = binary_body(feed, dict.fromkeys(feed, "INT64"))
    case = "MiniLM b1 seq128"
    common = ("--no-access-log", "--threads", str(threads))
    with serving(model, "minilm", work / "minilm.log", *common) as server:

        def raw_loop() -> dict:
            return raw_session_loop(model, feed, threads, seconds, True)

        def served() -> dict:
            return run_load(server.port, "/v2/models/minilm/infer", body, 8, seconds, 100_000, headers, 1.0)

        raw, srv, ratio = alternate(raw_loop, served, rounds)
        default = raw_session_loop(model, feed, threads, seconds, False)
    met = "yes" if ratio >= 0.90 else "NO"
    return [
        _row(case, f"raw session.run loop, {threads} threads, onnxruntime defaults (1 run)", default),
        _row(case, f"raw session.run loop, {threads} threads, mserve's session options", raw),
        _row(
            case,
            "mserve REST binary, c8, batching off",
            srv,
            f"{ratio:.2f} of raw (same options)",
            ">= 0.90",
            met,
        ),
    ]


def bench_tiny(work: Path, seconds: float, rounds: int, skip_mlserver: bool, threads: int) -> list[Row]:
    from models import build_tiny_mlp
    from served import serving

    model = build_tiny_mlp(work / "tiny.onnx")
    body = json_body({"x": np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)})
    path = "/v2/models/tiny/infer"
    batching = ("--max-batch-size", "32", "--max-batch-delay-ms", "2")
    rows = []
    with ExitStack() as stack:
        off_server = stack.enter_context(serving(model, "tiny", work / "tiny-off.log", "--no-access-log"))
        on_server = stack.enter_context(
            serving(model, "tiny", work / "tiny-on.log", "--no-access-log", *batching)
        )

        def off() -> dict:
            return run_load(off_server.port, path, body, 32, seconds, 200_000, warmup_s=1.0)

        def on() -> dict:
            return run_load(on_server.port, path, body, 32, seconds, 200_000, warmup_s=1.0)

        off_r, on_r, gain = alternate(off, on, rounds)
        ceiling_port = stack.enter_context(bare_uvicorn())
        _, ceiling, bound = alternate(
            off, lambda: run_load(ceiling_port, "/", body, 32, seconds, 200_000, warmup_s=1.0), rounds
        )
        rows.append(_row(TINY, "mserve c32, batching off", off_r))
        rows.append(
            _row(
                TINY,
                "mserve c32, batching on (32 rows, 2 ms)",
                on_r,
                f"{gain:.2f}x batching off",
                ">= 3x",
                "yes" if gain >= 3 else "NO",
            )
        )
        if not skip_mlserver:
            rows += _vs_mlserver(work, model, body, seconds, rounds, on, threads)
    rows.append(
        _row(
            TINY,
            "HTTP ceiling: bare uvicorn answering '{}' (no model)",
            ceiling,
            f"{bound:.2f}x batching off",
            "(bound)",
            "-",
        )
    )
    costs: dict[int, list[float]] = {1: [], 32: []}
    for _ in range(rounds):
        for batch in costs:
            costs[batch].append(handler_cost_us(model, body, batch))
    for batch, samples in costs.items():
        us = statistics.median(samples)
        label = "off" if batch == 1 else "on"
        rows.append(
            Row(
                TINY,
                f"same handlers in-process, no HTTP, batching {label}",
                1e6 / us,
                float("nan"),
                float("nan"),
                f"{us:.0f} us/request",
                "(why)",
                "-",
            )
        )
    return rows


def _vs_mlserver(
    work: Path,
    model: Path,
    body: bytes,
    seconds: float,
    rounds: int,
    mserve_on: Callable[[], dict],
    threads: int,
) -> list[Row]:
    from mlserver_baseline import MLSERVER_VERSION, mlserver_serving

    try:
        with mlserver_serving(work, model, body, threads) as port:

            def mlserver() -> dict:
                return run_load(port, "/v2/models/tiny/infer", body, 32, seconds, 200_000, warmup_s=1.0)

            ml, ours, speedup = alternate(mlserver, mserve_on, rounds)
    except Exception as exc:
        print(f"MLServer rows skipped: {exc}", file=sys.stderr)
        reason = f"MLServer {MLSERVER_VERSION}: not measured ({exc})"[:120]
        return [Row(TINY, reason, float("nan"), float("nan"), float("nan"))]
    p99_lower = ours["p99_ms"] < ml["p99_ms"]
    return [
        _row(TINY, f"MLServer {MLSERVER_VERSION} c32, adaptive batching 32/2 ms", ml),
        _row(
            TINY,
            "mserve c32, batching on, alternated with MLServer",
            ours,
            f"{speedup:.2f}x MLServer req/s, p99 {'lower' if p99_lower else 'HIGHER'}",
            ">= 2x, lower p99",
            "yes" if speedup >= 2 and p99_lower else "NO",
        ),
    ]


def bench_compute_bound(work: Path, seconds: float, rounds: int) -> list[Row]:
    """Where the model, not HTTP, is the cost: the compute-bound MLP of ANCHORS.md."""
    from models import build_tiny_mlp
    from served import serving

    model = build_tiny_mlp(work / "mlp-1024-4096.onnx", sizes=(1024, 4096, 4096, 1024))
    body = json_body({"x": np.linspace(-1, 1, 1024, dtype=np.float32).reshape(1, 1024)})
    case = "MLP 1024-4096-4096-1024, JSON"
    batching = ("--max-batch-size", "32", "--max-batch-delay-ms", "2")
    with ExitStack() as stack:
        off_server = stack.enter_context(serving(model, "mlp", work / "mlp-off.log", "--no-access-log"))
        on_server = stack.enter_context(
            serving(model, "mlp", work / "mlp-on.log", "--no-access-log", *batching)
        )
        off_r, on_r, gain = alternate(
            lambda: run_load(
                off_server.port, "/v2/models/mlp/infer", body, 32, seconds, 200_000, warmup_s=1.0
            ),
            lambda: run_load(
                on_server.port, "/v2/models/mlp/infer", body, 32, seconds, 200_000, warmup_s=1.0
            ),
            rounds,
        )
    return [
        _row(case, "mserve c32, batching off", off_r),
        _row(
            case,
            "mserve c32, batching on (32 rows, 2 ms)",
            on_r,
            f"{gain:.2f}x batching off",
            "(extra row)",
            "-",
        ),
    ]


def bench_vs_tree(work: Path, seconds: float, rounds: int, tree: Path) -> list[Row]:
    """The tiny MLP at c32, batching off, served by this checkout and by `tree` (e.g. main), alternated."""
    from models import build_tiny_mlp
    from served import serving

    model = build_tiny_mlp(work / "tiny-vs.onnx")
    body = json_body({"x": np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)})
    path = "/v2/models/tiny/infer"
    old_env = {"PYTHONPATH": os.pathsep.join(str(tree / p) for p in ("cli", "contract", "runtime"))}
    with ExitStack() as stack:
        old = stack.enter_context(
            serving(model, "tiny", work / "tiny-old.log", "--no-access-log", env=old_env)
        )
        new = stack.enter_context(serving(model, "tiny", work / "tiny-new.log", "--no-access-log"))
        sides = {
            "old": lambda: run_load(old.port, path, body, 32, seconds, 200_000, warmup_s=1.0),
            "new": lambda: run_load(new.port, path, body, 32, seconds, 200_000, warmup_s=1.0),
        }
        # Which side runs first in a round, and which server started first, were each worth
        # 1.2-1.4x on this machine (an A/A run showed it): so A B B A ..., ratio per pair.
        runs: dict[str, list[dict]] = {"old": [], "new": []}
        ratios = []
        for i in range(2 * ((rounds + 1) // 2)):
            order = ("old", "new") if i % 2 == 0 else ("new", "old")
            for side in order:
                runs[side].append(sides[side]())
            ratios.append(runs["new"][-1]["rps"] / runs["old"][-1]["rps"])

        def median(side: str) -> dict:
            return {k: statistics.median(r[k] for r in runs[side]) for k in ("rps", "p50_ms", "p99_ms")}

        old_r, new_r, ratio = median("old"), median("new"), statistics.median(ratios)
        costs: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(2 * ((rounds + 1) // 2)):
            for side in ("old", "new") if i % 2 == 0 else ("new", "old"):
                tree_or_none = tree if side == "old" else None
                costs[side].append(asgi_cost_us(model, body, tree_or_none, 20_000, "nosuch"))
    old_us, new_us = statistics.median(costs["old"]), statistics.median(costs["new"])
    return [
        Row(
            TINY,
            "REST adapter alone in-process (route, read, decode, 404), CPU us/request: other tree",
            1e6 / old_us,
            math.nan,
            math.nan,
            f"{old_us:.1f} us",
            "(why)",
            "-",
        ),
        Row(
            TINY,
            "REST adapter alone in-process (route, read, decode, 404), CPU us/request: this checkout",
            1e6 / new_us,
            math.nan,
            math.nan,
            f"{new_us:.1f} us ({new_us - old_us:+.1f} us)",
            "(why)",
            "-",
        ),
        _row(TINY, f"c32, batching off, served from {tree}", old_r),
        _row(
            TINY,
            "c32, batching off, served from this checkout",
            new_r,
            f"{ratio:.2f} of the other tree",
            ">= 0.95",
            "yes" if ratio >= 0.95 else "NO",
        ),
    ]


ASGI_COST = """
import asyncio, sys, time
from mserve_runtime.dataplane import DataPlane
from mserve_runtime.server import build_asgi_app
from mserve_runtime.settings import RuntimeSettings

model, requests, name, body = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.stdin.buffer.read()
settings = RuntimeSettings(model_path=model, model_name="tiny", access_log=False, threads=1)
plane = DataPlane(settings)
plane.load()
app = build_asgi_app(settings, plane)
scope = {
    "type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "root_path": "",
    "path": f"/v2/models/{name}/infer", "raw_path": f"/v2/models/{name}/infer".encode(), "query_string": b"",
    "headers": [(b"host", b"x"), (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())],
    "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
}
message = {"type": "http.request", "body": body, "more_body": False}

async def receive():
    return message

async def send(message):
    pass

async def main():
    for _ in range(500):
        await app(dict(scope), receive, send)
    started = time.process_time()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    print(1e6 * (time.process_time() - started) / requests)

asyncio.run(main())
"""


def asgi_cost_us(
    model: Path, body: bytes, tree: Path | None, requests: int = 5000, name: str = "tiny"
) -> float:
    """CPU microseconds per infer request through the whole ASGI app, no sockets, one process.

    CPU time of one process (the inference thread included) is far less disturbed by other
    load on a shared machine than requests/s over HTTP.
    """
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(str(tree / p) for p in ("cli", "contract", "runtime"))
    out = subprocess.run(
        [sys.executable, "-c", ASGI_COST, str(model), str(requests), name],
        input=body,
        capture_output=True,
        env=env,
        check=True,
    )
    return float(out.stdout.decode().split()[-1])


def handler_cost_us(model: Path, body: bytes, max_batch_size: int, requests: int = 20_000) -> float:
    """Event-loop cost per request of decode + data plane + encode, 32 concurrent, no HTTP.

    The difference between batching off and on is all that batching can save per request.
    """
    import uvloop
    from mserve_runtime.dataplane import DataPlane
    from mserve_runtime.request_limits import RequestLimits
    from mserve_runtime.rest_infer import RestInference
    from mserve_runtime.settings import RuntimeSettings

    async def measure() -> float:
        settings = RuntimeSettings(
            model_path=str(model), model_name="tiny", max_batch_size=max_batch_size, max_batch_delay_ms=2
        )
        plane = DataPlane(settings)
        plane.load()
        handlers = RestInference(plane, RequestLimits.derive(1 << 34))

        async def client(n: int) -> None:
            for _ in range(n):
                await handlers.v2_infer(body, "tiny")

        await asyncio.gather(*(client(100) for _ in range(32)))
        started = time.perf_counter()
        await asyncio.gather(*(client(requests // 32) for _ in range(32)))
        elapsed = time.perf_counter() - started
        await plane.close()
        return 1e6 * elapsed / (32 * (requests // 32))

    return uvloop.run(measure())


CEILING_APP = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})

port = int(sys.argv[1])
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")
"""


@contextmanager
def bare_uvicorn() -> Iterator[int]:
    """uvicorn answering '{}' with no work behind it: the most this client and machine can do.

    Batching can only remove model-run cost; when a model is as small as the tiny MLP, the
    served rate is bounded by this, whatever the batching.
    """
    import httpx
    from served import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", CEILING_APP, str(port)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


def bench_encoding(work: Path, n: int) -> list[Row]:
    from onnx import TensorProto, helper
    from served import serving

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 128, 384])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 128, 384])],
    )
    model = work / "identity.onnx"
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    x = np.random.default_rng(0).standard_normal((1, 128, 384)).astype(np.float32)
    json_req = json_body({"x": x})
    bin_req, headers = binary_body({"x": x}, {"x": "FP32"})
    with serving(model, "identity", work / "identity.log", "--no-access-log") as server:
        as_json = run_load(server.port, "/v2/models/identity/infer", json_req, 1, 20, n, warmup_s=1)
        as_binary = run_load(server.port, "/v2/models/identity/infer", bin_req, 1, 20, n, headers, warmup_s=1)
    ratio = as_json["p50_ms"] / as_binary["p50_ms"]
    case = "1x128x384 fp32 in+out, c1"
    return [
        _row(case, f"JSON ({len(json_req) / 1e6:.1f} MB request)", as_json),
        Row(
            case,
            f"binary extension ({len(bin_req) / 1e6:.2f} MB request)",
            as_binary["rps"],
            as_binary["p50_ms"],
            as_binary["p99_ms"],
            f"JSON p50 is {ratio:.1f}x binary",
            "report",
            "-",
        ),
    ]


# -- MLServer in its own venv -------------------------------------------------------------------


def print_table(rows: list[Row]) -> str:
    lines = [
        "| case | configuration | req/s | p50 ms | p99 ms | ratio | target | met |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.case} | {r.config} | {r.rps:,.0f} | {r.p50:.2f} | {r.p99:.2f} "
            f"| {r.ratio} | {r.target} | {r.met} |"
        )
    table = "\n".join(lines)
    print(table)
    return table


def _threads() -> int:
    from mserve_runtime.cpu_limit import default_threads

    return default_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per load run")
    parser.add_argument("--rounds", type=int, default=3, help="alternations per comparison")
    parser.add_argument("--encoding-requests", type=int, default=200, help="requests per encoding row")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument("--baseline-tree", type=Path, help="also compare with the runtime of this checkout")
    parser.add_argument(
        "--baseline-only", action="store_true", help="run only the --baseline-tree comparison"
    )
    args = parser.parse_args()
    threads = _threads()
    print(
        f"# mserve runtime benchmark: {os.cpu_count()} CPUs, onnxruntime threads {threads}, "
        f"load average before {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mserve-bench-") as tmp:
        work = Path(tmp)
        if args.baseline_tree:
            rows += bench_vs_tree(work, args.seconds, args.rounds, args.baseline_tree.resolve())
        if not args.baseline_only:
            if not args.skip_minilm:
                rows += bench_minilm(work, args.seconds, args.rounds, threads)
            rows += bench_tiny(work, args.seconds, args.rounds, args.skip_mlserver, threads)
            rows += bench_compute_bound(work, args.seconds, args.rounds)
            rows += bench_encoding(work, args.encoding_requests)
    print(f"# load average after {os.getloadavg()[0]:.1f}")
    print_table(rows)


if __name__ == "__main__":
    main()
