"""Run `mserve serve` as a real subprocess on free loopback ports, for the runtime tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.ports import free_port

MSERVE = Path(sys.executable).parent / "mserve"


@dataclass
class Server:
    """A running `mserve serve` process."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    name: str
    grpc_port: int = 0  # 0: gRPC off
    admin_port: int = 0
    tls: bool = False  # serving port (and gRPC) speak TLS

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """Health, /metrics, /openapi.json, /docs: plain HTTP, no authentication."""
        return f"http://127.0.0.1:{self.admin_port}"

    def metrics(self) -> str:
        return httpx.get(f"{self.admin_url}/metrics", timeout=10).text

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start(
    model: Path,
    name: str,
    log_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    timeout: float = 60.0,
    grpc: bool = False,
) -> Server:
    """Start the server (with `grpc`, on a second free port; the admin port on a third); with
    `wait_ready`, poll the admin port's /v2/health/ready until 200 (or fail with its logs)."""
    port, grpc_port = free_port(), free_port() if grpc else 0
    cmd = [str(MSERVE), "serve", str(model), "--name", name, "--port", str(port), "--host", "127.0.0.1"]
    if not any(a.startswith("--grpc-port") for a in args):
        cmd += ["--grpc-port", str(grpc_port)]
    admin_port = free_port()
    if "--admin-port" in args:
        admin_port = int(args[list(args).index("--admin-port") + 1])
    else:
        cmd += ["--admin-port", str(admin_port)]
    cmd += list(args)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    tls = "--tls-cert-file" in args or bool(full_env.get("MSERVE_TLS_CERT_FILE"))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = Server(proc, port, log_path, name, grpc_port, admin_port, tls)
    if wait_ready:
        wait_until_ready(server, timeout)
    return server


def wait_until_ready(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise AssertionError(
                f"mserve exited with {server.proc.returncode} before ready:\n{server.logs()}"
            )
        try:
            if httpx.get(f"{server.admin_url}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"mserve not ready after {timeout}s:\n{server.logs()}")


@contextmanager
def serving(model: Path, name: str, log_path: Path, *args: str, **kwargs: object) -> Iterator[Server]:
    """A ready server for the block; stopped (SIGTERM) after it, its logs printed on failure."""
    server = start(model, name, log_path, *args, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    except BaseException:
        print(f"---- mserve logs ({log_path}) ----\n{server.logs()[-5000:]}")
        raise
    finally:
        server.stop()
