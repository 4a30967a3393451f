"""A crash of a pool process is noticed and attributed: the termination log (what the kubelet
shows as the container's last termination message) names the models with requests in flight,
and on a segfault the crashing thread's stack, which names the model whose run crashed.

The segfault is real (a NULL dereference in the inference thread of a real pool server); it is
reached only through a test launcher (tests/support/crashing_serve.py), never by a client."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.crashing_serve import CRASH_VALUE
from tests.support.models import build_tiny_mlp
from tests.support.pool_serving import metric, serving_pool, start_pool
from tests.support.serving import Server, start

LAUNCHER = [sys.executable, "-m", "tests.support.crashing_serve"]
BODY = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
CRASHING = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [CRASH_VALUE] * 16}]}
KUBELET_KEEPS = 4096


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    directory = tmp_path / "repo"
    for name in ("crasher", "slow", "other"):
        build_tiny_mlp(directory / f"{name}.onnx")
    return directory


def _hold_request(server: Server, model: str) -> socket.socket:
    """An inference request to `model` whose body never comes: in flight until the socket closes."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"POST /v2/models/{model}/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n".encode())
    deadline = time.monotonic() + 20
    while metric(server.metrics(), "mserve_requests_in_flight", model=model) < 1:
        assert time.monotonic() < deadline, f"the request to {model} never counted"
        time.sleep(0.05)
    return sock


def _kept_by_kubelet(path: Path) -> str:
    return path.read_bytes()[-KUBELET_KEEPS:].decode("ascii", "replace")


def test_a_segfault_in_one_models_run_is_reported_naming_it_and_the_models_in_flight(
    repository: Path, tmp_path: Path
) -> None:
    report = tmp_path / "termination-log"
    env = {"MSERVE_CRASH_REPORT_FILE": str(report)}
    server = start_pool(repository, tmp_path / "mserve.log", env=env, program=LAUNCHER)
    try:
        with server.client() as client:
            assert client.post("/v2/models/other/infer", json=BODY).status_code == 200
            assert client.post("/v2/models/crasher/infer", json=BODY).status_code == 200
            assert "models with requests in flight: none" in report.read_text()
            held = _hold_request(server, "slow")
            with pytest.raises(httpx.TransportError):
                client.post("/v2/models/crasher/infer", json=CRASHING)
        held.close()
        assert server.proc.wait(30) == -signal.SIGSEGV
    finally:
        server.stop()
    message = _kept_by_kubelet(report)
    print(message)
    assert "models with requests in flight: crasher, slow" in message
    assert "Fatal Python error: Segmentation fault" in message
    assert "in model 'crasher'" in message, "the crashing thread's stack names the model"
    assert "model 'slow'" not in message.split("Fatal Python error")[1], "only the crashing thread"


def test_a_sigkill_leaves_the_models_in_flight(repository: Path, tmp_path: Path) -> None:
    """What the kernel's OOM killer leaves: no code runs, the last list written stays."""
    report = tmp_path / "termination-log"
    env = {"MSERVE_CRASH_REPORT_FILE": str(report)}
    server = start_pool(repository, tmp_path / "mserve.log", env=env)
    try:
        held = _hold_request(server, "slow")
        server.proc.send_signal(signal.SIGKILL)
        assert server.proc.wait(30) == -signal.SIGKILL
        held.close()
    finally:
        server.stop()
    message = _kept_by_kubelet(report)
    assert "not by a clean shutdown" in message
    assert "models with requests in flight: slow\n" in message


def test_a_clean_exit_empties_the_report(repository: Path, tmp_path: Path) -> None:
    report = tmp_path / "termination-log"
    with serving_pool(
        repository, tmp_path / "mserve.log", env={"MSERVE_CRASH_REPORT_FILE": str(report)}
    ) as server:
        with server.client() as client:
            assert client.post("/v2/models/other/infer", json=BODY).status_code == 200
        assert report.stat().st_size > 0
        assert server.stop() == 0
    assert report.read_bytes() == b""


@pytest.mark.parametrize("where", ["missing-dir/termination-log", ".", "fifo"])
def test_an_unwritable_report_path_stops_start_up_naming_the_setting(
    repository: Path, tmp_path: Path, where: str
) -> None:
    os.mkfifo(tmp_path / "fifo")
    env = {"MSERVE_CRASH_REPORT_FILE": str(tmp_path / where)}
    server = start_pool(repository, tmp_path / "mserve.log", env=env, wait_ready=False)
    assert server.proc.wait(60) == 2
    assert "MSERVE_CRASH_REPORT_FILE" in server.logs()
    assert "Traceback" not in server.logs()


def test_a_single_model_server_reports_its_model(repository: Path, tmp_path: Path) -> None:
    report = tmp_path / "termination-log"
    env = {"MSERVE_CRASH_REPORT_FILE": str(report)}
    server = start(repository / "other.onnx", "other", tmp_path / "mserve.log", env=env)
    try:
        server.proc.send_signal(signal.SIGKILL)
        assert server.proc.wait(30) == -signal.SIGKILL
    finally:
        server.stop()
    message = _kept_by_kubelet(report)
    assert message.startswith("mserve (model 'other') ended while serving, not by a clean shutdown.\n")
    assert "models with requests in flight" not in message
