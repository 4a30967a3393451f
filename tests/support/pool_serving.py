"""Run `mserve serve --pool DIR` as a real subprocess, and read its repository index."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port
from tests.support.serving import MSERVE, Server, wait_until_ready


def start_pool(
    directory: Path,
    log_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    grpc: bool = False,
    wait_ready: bool = True,
    timeout: float = 60.0,
    program: list[str] | None = None,
) -> Server:
    """`program`: the command standing for `mserve` (a test's launcher), default the real one."""
    port, grpc_port, admin_port = free_port(), free_port() if grpc else 0, free_port()
    cmd = [
        *(program or [str(MSERVE)]),
        "serve",
        "--pool",
        str(directory),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    cmd += ["--grpc-port", str(grpc_port), "--admin-port", str(admin_port), *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = Server(proc, port, log_path, "_pool", grpc_port, admin_port)
    if wait_ready:
        wait_until_ready(server, timeout)
    return server


@contextmanager
def serving_pool(directory: Path, log_path: Path, *args: str, **kwargs: Any) -> Iterator[Server]:
    """A ready pool server for the block; stopped after it, its logs printed on failure."""
    server = start_pool(directory, log_path, *args, **kwargs)
    try:
        yield server
    except BaseException:
        print(f"---- mserve pool logs ({log_path}) ----\n{server.logs()[-8000:]}")
        raise
    finally:
        server.stop()


def index(client: httpx.Client, ready: bool = False) -> dict[str, dict[str, Any]]:
    """POST /v2/repository/index, by model name."""
    response = client.post("/v2/repository/index", json={"ready": ready})
    assert response.status_code == 200, response.text
    return {row["name"]: row for row in response.json()}


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def label_values(text: str, label: str) -> set[str]:
    """Every value `label` takes in the exposition."""
    return {
        sample.labels[label]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if label in sample.labels
    }
