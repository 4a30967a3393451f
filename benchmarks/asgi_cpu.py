"""CPU time per inference request of the whole ASGI app, in-process, no sockets.

    python benchmarks/asgi_cpu.py MODEL.onnx MAX_BATCH_SIZE    (what overload.py starts)

Drives `build_asgi_app` (what uvicorn serves: middleware, fast path, data plane, batcher)
with 32 concurrent requests and prints the process CPU time per request in microseconds
(best of 5). CPU time, not wall time, because on a shared machine wall time mostly
measures the neighbours; run under another PYTHONPATH it measures another tree's code.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
import uvloop


async def _measure(model: str, max_batch_size: int) -> float:
    from mserve_runtime.dataplane import DataPlane
    from mserve_runtime.server import build_asgi_app
    from mserve_runtime.settings import RuntimeSettings

    settings = RuntimeSettings(
        model_path=model,
        model_name="tiny",
        max_batch_size=max_batch_size,
        max_batch_delay_ms=2,
        access_log=False,
        # The CPU per request, not admission: on a shared host a stall of a few ms makes the
        # adaptive limit (on by default with batching) refuse some of the 32 in-process clients.
        latency_tolerance=0,
    )
    plane = DataPlane(settings)
    plane.load()
    app = build_asgi_app(settings, plane)
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0.1] * 16}]})
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/tiny/infer",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    idle = asyncio.Event()

    async def one() -> None:
        sent: list[dict] = []
        read = False

        async def receive() -> dict:
            nonlocal read
            if not read:
                read = True
                return {"type": "http.request", "body": body, "more_body": False}
            await idle.wait()  # like a client that stays connected
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    async def client(n: int) -> None:
        for _ in range(n):
            await one()

    await asyncio.gather(*(client(50) for _ in range(32)))
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        await asyncio.gather(*(client(150) for _ in range(32)))
        best = min(best, (time.process_time() - started) / (32 * 150) * 1e6)
    await plane.close()
    return best


if __name__ == "__main__":
    print(f"{uvloop.run(_measure(sys.argv[1], int(sys.argv[2]))):.2f}")
