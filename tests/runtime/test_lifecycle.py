"""Start-up, readiness, graceful drain on SIGTERM, and exits with a reason."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.models import build_scale_model, build_warmup_failing_model
from tests.support.ports import free_port
from tests.support.serving import MSERVE, start


def _post_scale(url: str, rows: int, results: list, index: int) -> None:
    x = np.full((rows, 4), index, dtype=np.float32)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": x.ravel().tolist()}]}
    try:
        r = httpx.post(f"{url}/v2/models/scale/infer", json=body, timeout=30)
        results[index] = (r.status_code, r.json()["outputs"][0]["data"] if r.status_code == 200 else r.text)
    except Exception as exc:  # recorded, asserted by the test
        results[index] = (None, repr(exc))


def _wait_in_flight(url: str, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    line = 'mserve_requests_in_flight{model="scale"} '
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        if f"{line}{count}.0" in metrics:
            return
        time.sleep(0.05)
    raise AssertionError(f"never {count} requests in flight:\n{metrics}")


def test_sigterm_drains_in_flight_requests_then_exits_zero(tmp_path: Path) -> None:
    model = build_scale_model(tmp_path / "scale.onnx")
    # A long batching delay keeps requests in flight (queued) when SIGTERM arrives.
    server = start(
        model,
        "scale",
        tmp_path / "mserve.log",
        "--max-batch-size",
        "64",
        "--max-batch-delay-ms",
        "1500",
        env={"MSERVE_DRAIN_DELAY_S": "1.0"},
    )
    try:
        results: list = [None] * 12
        threads = [
            threading.Thread(target=_post_scale, args=(server.url, 1 + i % 3, results, i)) for i in range(12)
        ]
        for t in threads:
            t.start()
        _wait_in_flight(server.admin_url, 12)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        # Not ready any more, but still answering while endpoints catch up (drain delay).
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 503
        late: list = [None]
        _post_scale(server.url, 1, late, 0)
        for t in threads:
            t.join(30)
        assert server.proc.wait(30) == 0, server.logs()
    finally:
        server.stop()
    assert all(status == 200 for status, _ in results), results
    for i, (_, data) in enumerate(results):
        assert data == [2.0 * i] * (4 * (1 + i % 3))
    assert late[0][0] == 200
    assert "draining" in server.logs()


def test_corrupt_model_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    server = start(bad, "bad", tmp_path / "mserve.log", wait_ready=False)
    assert server.proc.wait(60) == 1
    logs = server.logs()
    assert "model failed to load" in logs
    assert "onnxruntime cannot load" in logs


def test_warm_up_failure_exits_non_zero(tmp_path: Path) -> None:
    model = build_warmup_failing_model(tmp_path / "warmup.onnx")
    server = start(model, "warmup", tmp_path / "mserve.log", wait_ready=False)
    assert server.proc.wait(60) == 1
    assert "warm-up inference failed" in server.logs()


def test_cuda_requested_without_cuda_is_a_clear_error(tmp_path: Path, digits) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    server = start(digits.path, "digits", tmp_path / "mserve.log", "--device", "cuda", wait_ready=False)
    assert server.proc.wait(60) == 1
    assert "device 'cuda' requested but this onnxruntime has no CUDAExecutionProvider" in server.logs()


def test_missing_model_path_is_a_usage_error(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.run(
        [str(MSERVE), "serve", str(tmp_path / "nope.onnx"), "--name", "x", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


def test_settings_come_from_environment(tmp_path: Path, digits) -> None:
    port = free_port()
    import os
    import subprocess

    env = {**os.environ, "MSERVE_MODEL_PATH": str(digits.path), "MSERVE_MODEL_NAME": "envname"}
    env |= {"MSERVE_HTTP_PORT": str(port), "MSERVE_GRPC_PORT": "0", "MSERVE_HOST": "127.0.0.1"}
    env |= {"MSERVE_THREADS": "1", "MSERVE_JSON_LOGS": "true", "MSERVE_ADMIN_PORT": str(free_port())}
    with (tmp_path / "mserve.log").open("wb") as log:
        proc = subprocess.Popen([str(MSERVE), "serve"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{port}/v2/models/envname/ready", timeout=1).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail((tmp_path / "mserve.log").read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    logs = (tmp_path / "mserve.log").read_text()
    assert "intra_op_threads=1" in logs
    assert logs.lstrip().startswith("{")


def test_invalid_setting_is_a_usage_error(tmp_path: Path, digits) -> None:
    import subprocess

    proc = subprocess.run(
        [str(MSERVE), "serve", str(digits.path), "--name", "x", "--max-batch-size", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "max_batch_size" in proc.stderr
