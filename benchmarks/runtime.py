"""Benchmark of the mserve runtime against its baselines, measured in one run on this machine.

    python benchmarks/runtime.py [--seconds 8] [--skip-minilm] [--skip-mlserver]

| case                               | baseline (same run)                     | target           |
| MiniLM b1, c8, REST binary         | raw onnxruntime session.run loop        | >= 0.90 of raw   |
| tiny MLP c32, batching on          | the same server, batching off           | >= 3x req/s      |
| tiny MLP c32                       | MLServer 1.7.1 + adaptive batching      | >= 2x req/s      |
| 1x128x384 fp32, c1                 | JSON encoding vs binary extension       | report the ratio |

Load comes from a separate client process (asyncio + uvloop over raw keep-alive sockets,
closed loop: each connection sends its next request when the previous answer is in),
bounded by a request count and a duration. Machines are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

CACHE = Path(os.environ.get("MSERVE_CACHE", Path.home() / ".cache" / "mserve"))
MLSERVER_VENV = CACHE / "mlserver-venv"
MLSERVER_VERSION = "1.7.1"


# -- load generator (runs in its own process) -------------------------------------------------


class _ClosedLoopClient(asyncio.Protocol):
    """One keep-alive connection: send, wait for the whole answer, send again (no pipelining).

    A Protocol with hand parsing costs the client far less per request than asyncio streams,
    so that the client process is not what limits the measured server.
    """

    def __init__(self, request: bytes, deadline: float, state: dict, lat: list, done: asyncio.Future) -> None:
        self.request, self.deadline, self.state, self.lat, self.done = request, deadline, state, lat, done
        self.buffer = bytearray()
        self.need = -1
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        if self.state["left"] <= 0 or time.perf_counter() >= self.deadline:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.state["left"] -= 1
        self.sent = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                at = head.find(b"content-length:")
                stop = head.find(b"\r\n", at)
                self.status = int(head[9:12])
                self.need = end + 4 + int(head[at + 15 : stop if stop > 0 else len(head)])
            if len(self.buffer) < self.need:
                return
            del self.buffer[: self.need]
            self.need = -1
            self.lat.append(time.perf_counter() - self.sent)
            statuses = self.state["status"]
            statuses[self.status] = statuses.get(self.status, 0) + 1
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _connection(host: str, port: int, request: bytes, deadline: float, state: dict, lat: list) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    await loop.create_connection(lambda: _ClosedLoopClient(request, deadline, state, lat, done), host, port)
    await done


async def _load(spec: dict, body: bytes) -> dict:
    headers = "".join(f"{k}: {v}\r\n" for k, v in spec.get("headers", {}).items())
    request = (
        f"POST {spec['path']} HTTP/1.1\r\nHost: {spec['host']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body
    results = {}
    for phase, seconds, total in (
        ("warmup", spec["warmup_s"], 10**9),
        ("measure", spec["seconds"], spec["total"]),
    ):
        state: dict = {"left": total, "status": {}}
        lat: list[float] = []
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(
            *(
                _connection(spec["host"], spec["port"], request, deadline, state, lat)
                for _ in range(spec["c"])
            )
        )
        elapsed = time.perf_counter() - started
        lat.sort()
        results[phase] = {
            "n": len(lat),
            "rps": len(lat) / elapsed,
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan"),
            "status": {str(k): v for k, v in state["status"].items()},
        }
    return results["measure"]


def run_load(
    port: int,
    path: str,
    body: bytes,
    c: int,
    seconds: float,
    total: int,
    headers: dict | None = None,
    warmup_s: float = 1.5,
) -> dict:
    """Drive the server from a separate client process; its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
        f.write(body)
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "path": path,
        "body_file": f.name,
        "c": c,
        "seconds": seconds,
        "total": total,
        "headers": headers or {},
        "warmup_s": warmup_s,
    }
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--loadgen", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=seconds + warmup_s + 120,
        )
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout)
    bad = {k: v for k, v in result["status"].items() if k != "200"}
    if bad:
        raise RuntimeError(f"non-200 answers during the load: {bad}")
    return result


# -- request bodies ---------------------------------------------------------------------------


def json_body(inputs: dict[str, np.ndarray], datatype: str = "FP32") -> bytes:
    import orjson

    return orjson.dumps(
        {
            "inputs": [
                {"name": n, "datatype": datatype, "shape": list(a.shape), "data": a.ravel().tolist()}
                for n, a in inputs.items()
            ]
        }
    )


def binary_body(inputs: dict[str, np.ndarray], datatypes: dict[str, str], binary_outputs: bool = True):
    import orjson

    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": n,
                    "datatype": datatypes[n],
                    "shape": list(a.shape),
                    "parameters": {"binary_data_size": a.nbytes},
                }
                for n, a in inputs.items()
            ],
            "parameters": {"binary_data_output": binary_outputs},
        }
    )
    return header + b"".join(np.ascontiguousarray(a).tobytes() for a in inputs.values()), {
        "Inference-Header-Content-Length": str(len(header))
    }


# -- rows -------------------------------------------------------------------------------------


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


def _row(case: str, config: str, r: dict) -> Row:
    return Row(case, config, r["rps"], r["p50_ms"], r["p99_ms"])


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


def bench_minilm(work: Path, seconds: float, threads: int) -> list[Row]:
    from models import export_minilm, minilm_inputs
    from served import serving

    model = export_minilm(CACHE / "bench" / "minilm-l6.onnx")
    feed = minilm_inputs(["mserve serves ONNX models over the V2 inference protocol."])
    # Baselines before and after the served run, averaged: the machine's load drifts.
    raw_before = raw_session_loop(model, feed, threads, seconds / 2, server_options=True)
    default_before = raw_session_loop(model, feed, threads, seconds / 2, server_options=False)
    body, headers = binary_body(feed, dict.fromkeys(feed, "INT64"))
    with serving(
        model, "minilm", work / "minilm.log", "--no-access-log", "--threads", str(threads)
    ) as server:
        served = run_load(server.port, "/v2/models/minilm/infer", body, 8, seconds, 100_000, headers)
    raw_after = raw_session_loop(model, feed, threads, seconds / 2, server_options=True)
    default_after = raw_session_loop(model, feed, threads, seconds / 2, server_options=False)
    raw = {k: (raw_before[k] + raw_after[k]) / 2 for k in raw_before}
    default = {k: (default_before[k] + default_after[k]) / 2 for k in default_before}
    ratio = served["rps"] / raw["rps"]
    case = "MiniLM b1 seq128"
    return [
        _row(case, f"raw session.run loop, {threads} threads, onnxruntime defaults", default),
        _row(case, f"raw session.run loop, {threads} threads, mserve's session options", raw),
        Row(
            case,
            "mserve REST binary, c8",
            served["rps"],
            served["p50_ms"],
            served["p99_ms"],
            f"{ratio:.2f} of raw (same options), {served['rps'] / default['rps']:.2f} of defaults",
            ">= 0.90",
            "yes" if ratio >= 0.90 else "NO",
        ),
    ]


def bench_tiny(work: Path, seconds: float, skip_mlserver: bool) -> list[Row]:
    from models import build_tiny_mlp
    from served import serving

    model = build_tiny_mlp(work / "tiny.onnx")
    body = json_body({"x": np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)})
    rows = []
    with serving(model, "tiny", work / "tiny-off.log", "--no-access-log") as server:
        off = run_load(server.port, "/v2/models/tiny/infer", body, 32, seconds, 200_000)
    batching = ("--max-batch-size", "32", "--max-batch-delay-ms", "2")
    with serving(model, "tiny", work / "tiny-on.log", "--no-access-log", *batching) as server:
        on = run_load(server.port, "/v2/models/tiny/infer", body, 32, seconds, 200_000)
    gain = on["rps"] / off["rps"]
    rows.append(_row("tiny MLP 16-64-4, JSON", "mserve c32, batching off", off))
    rows.append(
        Row(
            "tiny MLP 16-64-4, JSON",
            "mserve c32, batching on (32 rows, 2 ms)",
            on["rps"],
            on["p50_ms"],
            on["p99_ms"],
            f"{gain:.2f}x batching off",
            ">= 3x",
            "yes" if gain >= 3 else "NO",
        )
    )
    ceiling = http_ceiling(body, seconds)
    rows.append(
        Row(
            "tiny MLP 16-64-4, JSON",
            "HTTP ceiling: bare uvicorn answering '{}' (no model)",
            ceiling["rps"],
            ceiling["p50_ms"],
            ceiling["p99_ms"],
            f"batching on reaches {on['rps'] / ceiling['rps']:.2f} of it",
            "(bound)",
            "-",
        )
    )
    rows += bench_batching_compute_bound(work, seconds)
    if skip_mlserver:
        return rows
    try:
        ml = bench_mlserver(work, model, body, seconds)
    except Exception as exc:
        print(f"MLServer row skipped: {exc}", file=sys.stderr)
        rows.append(
            Row(
                "tiny MLP 16-64-4, JSON",
                f"MLServer {MLSERVER_VERSION}: not measured ({exc})"[:110],
                float("nan"),
                float("nan"),
                float("nan"),
            )
        )
        return rows
    speedup = on["rps"] / ml["rps"]
    rows.append(
        _row("tiny MLP 16-64-4, JSON", f"MLServer {MLSERVER_VERSION} c32, adaptive batching 32/2 ms", ml)
    )
    p99_better = on["p99_ms"] < ml["p99_ms"]
    rows.append(
        Row(
            "tiny MLP 16-64-4, JSON",
            "mserve batching on vs MLServer",
            on["rps"],
            on["p50_ms"],
            on["p99_ms"],
            f"{speedup:.2f}x MLServer req/s, p99 {'lower' if p99_better else 'HIGHER'}",
            ">= 2x, lower p99",
            "yes" if speedup >= 2 and p99_better else "NO",
        )
    )
    return rows


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


def http_ceiling(body: bytes, seconds: float) -> dict:
    """The most this client and machine can do through uvicorn with no work behind it.

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
        return run_load(port, "/", body, 32, seconds, 200_000)
    finally:
        proc.terminate()
        proc.wait(20)


def bench_batching_compute_bound(work: Path, seconds: float) -> list[Row]:
    """Where the model, not HTTP, is the cost: the compute-bound MLP of ANCHORS.md."""
    from models import build_tiny_mlp
    from served import serving

    model = build_tiny_mlp(work / "mlp-1024-4096.onnx", sizes=(1024, 4096, 4096, 1024))
    body = json_body({"x": np.linspace(-1, 1, 1024, dtype=np.float32).reshape(1, 1024)})
    case = "MLP 1024-4096-4096-1024, JSON"
    with serving(model, "mlp", work / "mlp-off.log", "--no-access-log") as server:
        off = run_load(server.port, "/v2/models/mlp/infer", body, 32, seconds, 200_000)
    batching = ("--max-batch-size", "32", "--max-batch-delay-ms", "2")
    with serving(model, "mlp", work / "mlp-on.log", "--no-access-log", *batching) as server:
        on = run_load(server.port, "/v2/models/mlp/infer", body, 32, seconds, 200_000)
    gain = on["rps"] / off["rps"]
    return [
        _row(case, "mserve c32, batching off", off),
        Row(
            case,
            "mserve c32, batching on (32 rows, 2 ms)",
            on["rps"],
            on["p50_ms"],
            on["p99_ms"],
            f"{gain:.2f}x batching off",
            "(extra row)",
            "-",
        ),
    ]


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

MLSERVER_MODEL = """
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = {threads}
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self.ready = True
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        outputs = self._session.run(None, {{self._input: x}})
        names = [o.name for o in self._session.get_outputs()]
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output(n, y) for n, y in zip(names, outputs)]
        )
"""


def ensure_mlserver() -> Path:
    """MLServer in its own venv (its pins conflict with ours); created on first use."""
    mlserver = MLSERVER_VENV / "bin" / "mlserver"
    if mlserver.exists():
        return mlserver
    print(f"creating {MLSERVER_VENV} with mlserver=={MLSERVER_VERSION} (once)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True, timeout=300)
    pip = [
        str(MLSERVER_VENV / "bin" / "pip"),
        "install",
        "-q",
        f"mlserver=={MLSERVER_VERSION}",
        "onnxruntime",
        "numpy",
    ]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0 or not mlserver.exists():
        shutil.rmtree(MLSERVER_VENV, ignore_errors=True)
        raise RuntimeError(f"pip install mlserver=={MLSERVER_VERSION} failed: {done.stderr[-500:]}")
    return mlserver


def bench_mlserver(work: Path, model: Path, body: bytes, seconds: float) -> dict:
    import httpx
    from served import free_port

    mlserver = ensure_mlserver()
    root = work / "mlserver"
    (root / "tiny").mkdir(parents=True, exist_ok=True)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (root / "settings.json").write_text(
        json.dumps(
            {
                "http_port": http_port,
                "grpc_port": grpc_port,
                "metrics_port": metrics_port,
                # Its default worker pool did not start on these machines (see docs/runtime.md).
                "parallel_workers": 0,
                "debug": False,
            }
        )
    )
    (root / "tiny" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "tiny",
                "implementation": "onnx_runtime_model.OnnxRuntimeModel",
                "max_batch_size": 32,
                "max_batch_time": 0.002,
                "parameters": {"uri": str(model)},
            }
        )
    )
    (root / "tiny" / "onnx_runtime_model.py").write_text(MLSERVER_MODEL.format(threads=_threads()))
    log = (work / "mlserver.log").open("wb")
    proc = subprocess.Popen(
        [str(mlserver), "start", str(root)], stdout=log, stderr=subprocess.STDOUT, cwd=root / "tiny"
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlserver exited {proc.returncode}: {(work / 'mlserver.log').read_text()[-800:]}"
                )
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{http_port}/v2/models/tiny/ready", timeout=1).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlserver not ready after 120 s")
            time.sleep(0.2)
        check = httpx.post(f"http://127.0.0.1:{http_port}/v2/models/tiny/infer", content=body, timeout=10)
        check.raise_for_status()
        return run_load(http_port, "/v2/models/tiny/infer", body, 32, seconds, 200_000)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _threads() -> int:
    from mserve_runtime.cpu_limit import default_threads

    return default_threads()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per load row")
    parser.add_argument("--encoding-requests", type=int, default=200, help="requests per encoding row")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-mlserver", action="store_true")
    args = parser.parse_args()
    if args.loadgen:
        import uvloop

        spec = json.loads(args.loadgen)
        print(json.dumps(uvloop.run(_load(spec, Path(spec["body_file"]).read_bytes()))))
        return
    threads = _threads()
    print(
        f"# mserve runtime benchmark: {os.cpu_count()} CPUs, onnxruntime threads {threads}, "
        f"load average before {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mserve-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_minilm:
            rows += bench_minilm(work, args.seconds, threads)
        rows += bench_tiny(work, args.seconds, args.skip_mlserver)
        rows += bench_encoding(work, args.encoding_requests)
    print(f"# load average after {os.getloadavg()[0]:.1f}")
    print_table(rows)


if __name__ == "__main__":
    main()
