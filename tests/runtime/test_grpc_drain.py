"""Graceful drain over gRPC: requests in flight when SIGTERM arrives all get their answers."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton

from tests.support.models import DigitsModel, build_scale_model
from tests.support.serving import Server, serving


def test_in_flight_grpc_requests_finish_during_sigterm(digits: DigitsModel, tmp_path: Path) -> None:
    model = digits.path
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inputs = [np.random.default_rng(i).random((1, 64), dtype=np.float32) for i in range(8)]
    results: dict[int, np.ndarray | Exception] = {}

    def call(index: int, url: str) -> None:
        client = triton.InferenceServerClient(url)
        tensor = triton.InferInput("x", [1, 64], "FP32")
        tensor.set_data_from_numpy(inputs[index])
        try:
            results[index] = client.infer("digits", [tensor], client_timeout=30).as_numpy("logits")
        except Exception as exc:
            results[index] = exc
        finally:
            client.close()

    # A long batching delay keeps the requests waiting in the server when the signal arrives.
    with serving(
        model, "digits", tmp_path / "mserve.log", "--threads", "1", "--max-batch-size", "64",
        "--max-batch-delay-ms", "1500", grpc=True,
    ) as served:  # fmt: skip
        threads = [threading.Thread(target=call, args=(i, served.grpc_url)) for i in range(len(inputs))]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        served.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        exit_code = served.proc.wait(30)

    assert exit_code == 0, served.logs()
    for index, x in enumerate(inputs):
        result = results[index]
        assert not isinstance(result, Exception), f"request {index} failed: {result}\n{served.logs()}"
        np.testing.assert_allclose(result, session.run(["logits"], {"x": x})[0], rtol=1e-6)


def _infer_scale(index: int, served: Server, protocol: str, results: dict) -> None:
    """y = 2x for x = index, over `protocol`; the answer (or the exception) in results[index]."""
    x = np.full((1, 4), index, dtype=np.float32)
    try:
        if protocol == "rest":
            tensor_doc = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [float(index)] * 4}
            body = {"inputs": [tensor_doc]}
            r = httpx.post(f"{served.url}/v2/models/scale/infer", json=body, timeout=30)
            results[index] = r.json()["outputs"][0]["data"] if r.status_code == 200 else RuntimeError(r.text)
            return
        client = triton.InferenceServerClient(served.grpc_url)
        tensor = triton.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(x)
        try:
            results[index] = client.infer("scale", [tensor], client_timeout=30).as_numpy("y").ravel().tolist()
        finally:
            client.close()
    except Exception as exc:
        results[index] = exc


def _start_both_protocols(served: Server, count: int, results: dict) -> list[threading.Thread]:
    """`count` requests in threads, alternating REST and gRPC; returns once all are in flight."""
    threads = [
        threading.Thread(target=_infer_scale, args=(i, served, ("rest", "grpc")[i % 2], results))
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    line = f'mserve_requests_in_flight{{model="scale"}} {count}.0'
    while line not in served.metrics():
        assert time.monotonic() < deadline, f"never {count} requests in flight\n{served.logs()}"
        time.sleep(0.05)
    return threads


def test_sigterm_stops_rest_and_grpc_admitting_together(tmp_path: Path) -> None:
    model = build_scale_model(tmp_path / "scale.onnx")
    results: dict[int, object] = {}
    # In-flight requests of both protocols wait 2 s for their batch when SIGTERM arrives.
    args = ("--max-batch-size", "64", "--max-batch-delay-ms", "2000")
    with serving(model, "scale", tmp_path / "scale.log", "--threads", "1", *args, grpc=True) as served:
        threads = _start_both_protocols(served, 4, results)
        served.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # While HTTP drains, gRPC must not take new calls either (it used to, until HTTP had drained).
        _infer_scale(10, served, "grpc", results)
        for thread in threads:
            thread.join(30)
        exit_code = served.proc.wait(30)

    assert exit_code == 0, served.logs()
    late = results.pop(10)
    assert isinstance(late, triton.InferenceServerException), late
    assert late.status() == "StatusCode.UNAVAILABLE", late
    assert results == {i: [2.0 * i] * 4 for i in range(4)}, served.logs()


def test_http_and_grpc_drain_within_one_drain_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_scale_model(tmp_path / "scale.onnx")
    results: dict[int, object] = {}
    drain_s = 3.0
    monkeypatch.setenv("MSERVE_DRAIN_TIMEOUT_S", str(drain_s))
    # Batches that would wait 60 s: neither protocol's requests finish within the drain timeout.
    args = ("--max-batch-size", "64", "--max-batch-delay-ms", "60000")
    with serving(model, "scale", tmp_path / "scale.log", "--threads", "1", *args, grpc=True) as served:
        threads = _start_both_protocols(served, 2, results)
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        exit_code = served.proc.wait(30)
        elapsed = time.monotonic() - started
        for thread in threads:
            thread.join(30)

    assert exit_code == 0, served.logs()
    # One drain timeout for both (they used to drain one after the other: twice as long).
    assert drain_s <= elapsed < drain_s * 1.6, f"exited {elapsed:.1f}s after SIGTERM\n{served.logs()}"
