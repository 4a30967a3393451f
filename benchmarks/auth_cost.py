"""What access control costs: API-key authentication and TLS, each against the same server without it.

    python -m benchmarks.auth_cost [--seconds 3] [--rounds 3] [--skip-minilm]

Cells, each a pair of `mserve serve` processes measured alternately (a, b, a, b, ...) from a
separate closed-loop client process (benchmarks/http_load.py), REST with binary tensors:
- tiny MLP, 32 connections: `MSERVE_AUTH=apiKey` (Authorization: Bearer, usage metered) vs
  `none` (target: at least 0.95x the requests/s);
- tiny MLP, 32 connections: TLS vs plaintext (report);
- MiniLM-L6 batch 1, 8 connections: TLS vs plaintext (report; `--skip-minilm` leaves it out).
Prints one table with the medians and, per cell, the median ratio of requests/s and of the
server's CPU time per request (read from /proc, requests from its own counter). Not a timed test: on a
shared machine, compare ratios measured in one run, not absolute numbers across runs. As the
HTTP cells are noisy there, the API-key cost is also measured as CPU time per request of the
whole ASGI app in-process (as benchmarks/asgi_cpu.py does), which neighbours barely move.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import uvloop

from benchmarks.http_load import binary_body, run_load
from benchmarks.runtime import CACHE
from tests.support.models import build_tiny_mlp
from tests.support.secret_volume import write_secret
from tests.support.serving import Server, serving
from tests.support.tls_certs import issue

KEY = "bench-key-5b0f1c2d3e4a"
COMMON = ("--no-access-log", "--threads", "1", "--max-batch-size", "32", "--max-batch-delay-ms", "2")


def _server_cpu_s(server: Server) -> float:
    """CPU seconds the server process (all its threads) has used so far."""
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _served(server: Server) -> float:
    """Inference requests the server has answered 200 so far (its own counter)."""
    found = re.search(
        r'mserve_requests_total{model="[^"]+",protocol="rest",status="200"} (\S+)', server.metrics()
    )
    return float(found.group(1)) if found else 0.0


def _load(
    server: Server, model: str, body: bytes, headers: dict, c: int, seconds: float, ca: str | None = None
) -> Callable[[], dict]:
    """One run: the client's req/s and latency, and the server's CPU per request (warm-up
    included on both sides of that division), which neighbours on the machine barely move."""

    def measure() -> dict:
        cpu, done = _server_cpu_s(server), _served(server)
        result = run_load(server.port, f"/v2/models/{model}/infer", body, c, seconds, 10**7, headers, 1.0, ca)
        result["cpu_us"] = 1e6 * (_server_cpu_s(server) - cpu) / max(1.0, _served(server) - done)
        return result

    return measure


KEYS = ("rps", "p50_ms", "p99_ms", "cpu_us")


def _alternate(a: Callable[[], dict], b: Callable[[], dict], rounds: int) -> tuple[dict, dict, float, float]:
    """a, b, a, b, ...: the medians of each side, and the medians of the per-round ratios of
    req/s (b/a) and of server CPU per request (a/b: above 1 means b costs less)."""
    runs_a, runs_b = [], []
    for _ in range(rounds):
        runs_a.append(a())
        runs_b.append(b())
    medians = [{k: statistics.median(r[k] for r in runs) for k in KEYS} for runs in (runs_a, runs_b)]
    rps = statistics.median(y["rps"] / x["rps"] for x, y in zip(runs_a, runs_b, strict=True))
    cpu = statistics.median(x["cpu_us"] / y["cpu_us"] for x, y in zip(runs_a, runs_b, strict=True))
    return medians[0], medians[1], rps, cpu


def _cell(
    name: str, a: str, b: str, pair: tuple[dict, dict, float, float], target: float | None
) -> list[str]:
    base, other, rps, cpu = pair
    verdict = "report" if target is None else f">= {target:.2f} (CPU): {'yes' if cpu >= target else 'NO'}"

    def row(config: str, r: dict) -> str:
        latency = f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f}"
        return f"| {name} | {config} | {r['rps']:.0f} | {latency} | {r['cpu_us']:.0f} "

    return [row(a, base) + "| | | |", row(b, other) + f"| {rps:.3f} | {cpu:.3f} | {verdict} |"]


async def _asgi_cpu_pair(model: Path, keys_dir: Path, rounds: int) -> tuple[float, float]:
    """CPU microseconds per request of the whole ASGI app (what uvicorn serves), without and with
    API keys, in this process, measured alternately; the same request (with its Authorization
    header) for both. Best of `rounds` each: CPU time, so neighbours on the machine barely move it."""
    import asyncio
    import time

    import orjson
    from mserve_runtime.dataplane import DataPlane
    from mserve_runtime.server import build_asgi_app
    from mserve_runtime.settings import RuntimeSettings

    apps, planes = {}, []
    for mode in ("none", "apiKey"):
        settings = RuntimeSettings(
            model_path=str(model),
            model_name="tiny",
            max_batch_size=32,
            max_batch_delay_ms=2,
            access_log=False,
            auth=mode,
            api_keys_dir=str(keys_dir),
        )
        plane = DataPlane(settings)
        plane.load()
        planes.append(plane)
        apps[mode] = build_asgi_app(settings, plane)
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0.1] * 16}]})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"authorization", f"Bearer {KEY}".encode()),
    ]
    idle = asyncio.Event()

    async def one(app: object) -> None:
        read, sent = False, []

        async def receive() -> dict:
            nonlocal read
            if not read:
                read = True
                return {"type": "http.request", "body": body, "more_body": False}
            await idle.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v2/models/tiny/infer", "query_string": b""}
        await app({**scope, "headers": headers}, receive, send)  # type: ignore[operator]
        assert sent[0]["status"] == 200, sent

    async def client(app: object, n: int) -> None:
        for _ in range(n):
            await one(app)

    best = {"none": float("inf"), "apiKey": float("inf")}
    for r in range(2 * rounds + 1):
        for mode in ("none", "apiKey") if r % 2 else ("apiKey", "none"):
            started = time.process_time()
            await asyncio.gather(*(client(apps[mode], 100) for _ in range(32)))
            if r:  # the first round warms up
                best[mode] = min(best[mode], (time.process_time() - started) / 3200 * 1e6)
    for plane in planes:
        await plane.close()
    return best["none"], best["apiKey"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="a/b alternations per cell")
    parser.add_argument("--skip-minilm", action="store_true", help="leave out the MiniLM TLS cell")
    args = parser.parse_args()

    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mserve-auth-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        tiny = build_tiny_mlp(work / "tiny.onnx")
        x = np.random.default_rng(0).random((1, 16), dtype=np.float32)
        body, headers = binary_body({"x": x}, {"x": "FP32"})
        write_secret(work / "keys" / "bench", {"key": KEY})
        issued = issue("bench")
        write_secret(work / "tls", {"tls.crt": issued.cert_pem, "tls.key": issued.key_pem})
        ca = str(issued.write_ca(work / "ca.pem"))
        tls_args = (
            "--tls-cert-file",
            str(work / "tls" / "tls.crt"),
            "--tls-key-file",
            str(work / "tls" / "tls.key"),
        )

        def start(label: str, path: Path, name: str, *extra: str) -> Server:
            return stack.enter_context(serving(path, name, work / f"{label}.log", *COMMON, *extra))

        plain = start("plain", tiny, "tiny")
        keyed = start("apikey", tiny, "tiny", "--auth", "apiKey", "--api-keys-dir", str(work / "keys"))
        secure = start("tls", tiny, "tiny", *tls_args)
        auth_headers = {**headers, "Authorization": f"Bearer {KEY}"}

        # The same request bytes for both: the server without authentication ignores the header.
        pair = _alternate(
            _load(plain, "tiny", body, auth_headers, 32, args.seconds),
            _load(keyed, "tiny", body, auth_headers, 32, args.seconds),
            args.rounds,
        )
        rows += _cell("tiny MLP b1, REST binary, c32", "auth none", "auth apiKey (Bearer)", pair, 0.95)
        none_us, key_us = uvloop.run(_asgi_cpu_pair(tiny, work / "keys", args.rounds))
        rows.append(
            f"| tiny MLP b1, JSON, in-process ASGI app, 32 concurrent | none / apiKey | | | "
            f"| {none_us:.1f} / {key_us:.1f} | | {none_us / key_us:.3f} | "
            f">= 0.95 (CPU): {'yes' if none_us / key_us >= 0.95 else 'NO'} |"
        )
        pair = _alternate(
            _load(plain, "tiny", body, headers, 32, args.seconds),
            _load(secure, "tiny", body, headers, 32, args.seconds, ca),
            args.rounds,
        )
        rows += _cell("tiny MLP b1, REST binary, c32", "plaintext", "TLS", pair, None)

        minilm_path = CACHE / "bench" / "minilm-l6.onnx"
        if not args.skip_minilm:
            from tests.support.models import export_minilm, minilm_inputs

            export_minilm(minilm_path)
            feed = minilm_inputs(["mserve serves ONNX models over the V2 inference protocol."])
            mbody, mheaders = binary_body(feed, dict.fromkeys(feed, "INT64"))
            m_plain = start("minilm-plain", minilm_path, "minilm")
            m_tls = start("minilm-tls", minilm_path, "minilm", *tls_args)
            pair = _alternate(
                _load(m_plain, "minilm", mbody, mheaders, 8, args.seconds),
                _load(m_tls, "minilm", mbody, mheaders, 8, args.seconds, ca),
                args.rounds,
            )
            rows += _cell("MiniLM-L6 b1 seq128, REST binary, c8", "plaintext", "TLS", pair, None)

    print(
        f"\nserver: {' '.join(COMMON)}; {os.cpu_count()} CPUs shared with the client; "
        f"{args.rounds} alternations of {args.seconds:g} s per side, medians\n"
    )
    print(
        "| case | config | req/s | p50 ms | p99 ms | server CPU µs/req | req/s ratio | CPU ratio | target |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
