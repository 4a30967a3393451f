"""Open-loop HTTP load from a separate client process: requests at a fixed rate, answered or not.

    python benchmarks/open_load.py SPEC_JSON    (what `run_open_load` starts)

A closed loop (http_load.py) slows down with the server and so can never overload it; here
request i is due at start + i / rate whatever the answers do. It goes out on a free
keep-alive connection from a pool; when none is free it waits in the client, and its
latency still counts from when it was due (no coordinated omission). The result is, per
status, the count and latency percentiles, plus the rate actually offered, as JSON.
"""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import time
from pathlib import Path


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, answer parsed by Content-Length."""

    def __init__(self, load: _OpenLoop) -> None:
        self.load = load
        self.buffer = bytearray()
        self.need = -1
        self.due = 0.0
        self.status = 0
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.load.release(self)

    def send(self, due: float) -> None:
        self.due = due
        self.busy = True
        self.transport.write(self.load.request)

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
            self.busy = False
            self.load.answered(self, self.status, time.perf_counter() - self.due)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.load.lost(self)


class _OpenLoop:
    def __init__(self, request: bytes) -> None:
        self.request = request
        # First in, first out: every connection is used in turn, none idles into the server's
        # keep-alive timeout.
        self.free: collections.deque[_Connection] = collections.deque()
        self.waiting: collections.deque[float] = collections.deque()
        self.latencies: dict[int, list[float]] = collections.defaultdict(list)
        self.sent = 0
        self.connections_lost = 0
        self.requests_lost = 0
        self.recording = True

    def dispatch(self, due: float) -> None:
        self.sent += 1
        if self.free:
            self.free.popleft().send(due)
        else:
            self.waiting.append(due)

    def release(self, conn: _Connection) -> None:
        if conn.closed:
            return
        if self.waiting:
            conn.send(self.waiting.popleft())
        else:
            self.free.append(conn)

    def lost(self, conn: _Connection) -> None:
        self.connections_lost += 1
        self.requests_lost += conn.busy
        if conn in self.free:
            self.free.remove(conn)

    def answered(self, conn: _Connection, status: int, seconds: float) -> None:
        if self.recording:
            self.latencies[status].append(seconds)
        self.release(conn)


def _percentiles(values: list[float]) -> dict[str, float]:
    values.sort()
    if not values:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    pick = lambda q: 1000 * values[min(len(values) - 1, int(len(values) * q))]  # noqa: E731
    return {"n": len(values), "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


async def _run(spec: dict, body: bytes) -> dict:
    headers = "".join(f"{k}: {v}\r\n" for k, v in spec.get("headers", {}).items())
    request = (
        f"POST {spec['path']} HTTP/1.1\r\nHost: {spec['host']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body
    load = _OpenLoop(request)
    loop = asyncio.get_running_loop()
    for _ in range(spec["connections"]):
        await loop.create_connection(lambda: _Connection(load), spec["host"], spec["port"])
    interval = 1.0 / spec["rate"]
    started = time.perf_counter()
    end = started + spec["seconds"]
    i = 0
    while (now := time.perf_counter()) < end:
        while (due := started + i * interval) <= now:
            load.dispatch(due)
            i += 1
        await asyncio.sleep(min(due - now, 0.001))
    offered_s = time.perf_counter() - started
    # Answers to what was due inside the window still count; wait for them a little.
    grace_end = time.perf_counter() + spec.get("drain_s", 10.0)
    while (  # noqa: ASYNC110 (polling a counter, not waiting for one event)
        time.perf_counter() < grace_end
        and sum(map(len, load.latencies.values())) + load.requests_lost < load.sent
    ):
        await asyncio.sleep(0.01)
    load.recording = False
    answered = sum(map(len, load.latencies.values()))
    return {
        "offered_rps": load.sent / offered_s,
        "sent": load.sent,
        "answered": answered,
        "unanswered": load.sent - answered,
        "connections_lost": load.connections_lost,
        "requests_lost": load.requests_lost,
        "status": {str(k): _percentiles(v) for k, v in load.latencies.items()},
    }


def run_open_load(
    port: int,
    path: str,
    body: bytes,
    rate: float,
    seconds: float,
    connections: int,
    headers: dict | None = None,
) -> dict:
    """Offer `rate` requests/s for `seconds` from a separate process; its JSON result."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
        f.write(body)
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "path": path,
        "body_file": f.name,
        "rate": rate,
        "seconds": seconds,
        "connections": connections,
        "headers": headers or {},
    }
    try:
        command = [sys.executable, __file__, json.dumps(spec)]
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    finally:
        Path(f.name).unlink()
    if out.returncode != 0:
        raise RuntimeError(f"open-loop load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def main() -> None:
    import uvloop

    spec = json.loads(sys.argv[1])
    print(json.dumps(uvloop.run(_run(spec, Path(spec["body_file"]).read_bytes()))))


if __name__ == "__main__":
    main()
