"""`mserve serve` as a real process on free loopback ports, for tests that talk to it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage_servers import free_port


@dataclass
class ServedModel:
    process: subprocess.Popen[bytes]
    name: str
    http_url: str
    grpc_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


def _wait_ready(served: ServedModel, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not served.alive():
            raise RuntimeError(f"mserve serve exited with {served.process.returncode}:\n{served.log()}")
        url = f"{served.http_url}/v2/health/ready"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"mserve serve not ready after {timeout_s}s:\n{served.log()}")


@contextlib.contextmanager
def serve_model(
    model_path: Path, name: str, log_dir: Path, *extra_args: str, timeout_s: float = 60
) -> Iterator[ServedModel]:
    """Start `mserve serve`, wait until ready, yield it; stop it with SIGTERM afterwards."""
    http_port, grpc_port = free_port(), free_port()
    log_path = log_dir / f"mserve-{name}-{http_port}.log"
    command = [
        str(Path(sys.executable).parent / "mserve"),
        "serve",
        str(model_path),
        "--name",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--threads",
        "1",
        *extra_args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    served = ServedModel(process, name, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log_path)
    try:
        _wait_ready(served, timeout_s)
        yield served
    finally:
        if served.alive():
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
