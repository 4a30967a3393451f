"""HTTP load from a separate client process: closed loop over keep-alive sockets.

    python benchmarks/http_load.py SPEC_JSON    (what `run_load` starts)

Each connection sends its next request when the previous answer is complete (no
pipelining), until a request count or a duration runs out; the result is req/s and
latency percentiles as JSON on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


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


async def _connection(
    host: str, port: int, request: bytes, deadline: float, state: dict, lat: list, tls: Any = None
) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    await loop.create_connection(
        lambda: _ClosedLoopClient(request, deadline, state, lat, done), host, port, ssl=tls
    )
    await done


async def _load(spec: dict, body: bytes) -> dict:
    headers = "".join(f"{k}: {v}\r\n" for k, v in spec.get("headers", {}).items())
    request = (
        f"POST {spec['path']} HTTP/1.1\r\nHost: {spec['host']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body
    tls = None
    if spec.get("ca_file"):
        import ssl

        tls = ssl.create_default_context(cafile=spec["ca_file"])
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
                _connection(spec["host"], spec["port"], request, deadline, state, lat, tls)
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
    ca_file: str | None = None,
) -> dict:
    """Drive the server from a separate client process; its JSON result. With `ca_file`, over
    TLS (a session per connection, kept for the run)."""
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
        "ca_file": ca_file,
    }
    try:
        out = subprocess.run(
            [sys.executable, __file__, json.dumps(spec)],
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


def main() -> None:
    import uvloop

    spec = json.loads(sys.argv[1])
    print(json.dumps(uvloop.run(_load(spec, Path(spec["body_file"]).read_bytes()))))


if __name__ == "__main__":
    main()
