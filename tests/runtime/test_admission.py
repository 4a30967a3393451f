"""Admission control in a real server: shedding beyond max_in_flight, deadlines, clients gone.

A long batching delay holds admitted requests inside the server for a known time, so that
"full" and "queued" are states the tests can reach on purpose, not races.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.support.models import build_scale_model
from tests.support.ports import free_port
from tests.support.serving import Server, serving

HOLD_S = 1.5
LIMIT = 3
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}


def _metric(text: str, line_start: str) -> float:
    match = re.search(rf"^{re.escape(line_start)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _metrics(server: Server) -> str:
    return server.metrics()


def _wait_in_flight(server: Server, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _metric(_metrics(server), 'mserve_requests_in_flight{model="scale"}') == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"never {count} requests in flight:\n{_metrics(server)}")


def _grpc_infer(port: int, timeout: float | None = None) -> pb.ModelInferResponse:
    request = pb.ModelInferRequest(model_name="scale")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=timeout)


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    """The scale model; each request waits HOLD_S for its batch; at most LIMIT in flight."""
    tmp = tmp_path_factory.mktemp("admission")
    model = build_scale_model(tmp / "scale.onnx")
    grpc_port = free_port()
    args = ["--max-batch-size", "64", "--max-batch-delay-ms", str(HOLD_S * 1000)]
    args += ["--max-in-flight", str(LIMIT), "--grpc-port", str(grpc_port)]
    with serving(model, "scale", tmp / "mserve.log", *args) as server:
        yield server, grpc_port


def test_beyond_the_limit_rest_gets_fast_503_and_grpc_unavailable_while_admitted_ones_succeed(
    held: tuple[Server, int],
) -> None:
    server, grpc_port = held
    answers: list[httpx.Response] = []
    admitted = [
        threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{server.url}/v2/models/scale/infer", json=BODY, timeout=30)
            )
        )
        for _ in range(LIMIT)
    ]
    for thread in admitted:
        thread.start()
    _wait_in_flight(server, LIMIT)

    started = time.perf_counter()
    shed = httpx.post(f"{server.url}/v2/models/scale/infer", json=BODY, timeout=30)
    rest_seconds = time.perf_counter() - started
    assert shed.status_code == 503, shed.text
    assert shed.headers["retry-after"] == "1"
    assert "MSERVE_MAX_IN_FLIGHT" in shed.json()["error"]
    assert rest_seconds < HOLD_S / 2, f"the 503 took {rest_seconds:.2f}s: it waited instead of shedding"

    started = time.perf_counter()
    with pytest.raises(grpc.RpcError) as refused:
        _grpc_infer(grpc_port)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "overloaded" in refused.value.details()
    assert ("grpc-retry-pushback-ms", "1000") in tuple(refused.value.trailing_metadata())
    assert time.perf_counter() - started < HOLD_S / 2

    # Health, readiness and metrics are never shed.
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/scale/ready"):
        assert httpx.get(f"{server.url}{path}", timeout=5).status_code == 200, path
    assert httpx.get(f"{server.admin_url}/metrics", timeout=5).status_code == 200

    for thread in admitted:
        thread.join(30)
    assert [r.status_code for r in answers] == [200] * LIMIT
    assert all(r.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0] for r in answers)
    metrics = _metrics(server)
    assert _metric(metrics, 'mserve_requests_shed_total{model="scale",protocol="rest"}') >= 1
    assert _metric(metrics, 'mserve_requests_shed_total{model="scale",protocol="grpc"}') >= 1
    # Room again: a normal request right after succeeds.
    after = httpx.post(f"{server.url}/v2/models/scale/infer", json=BODY, timeout=30)
    assert after.status_code == 200, after.text


def test_deadline_header_gives_504_and_the_work_never_runs(held: tuple[Server, int]) -> None:
    server, _ = held
    runs_before = _metric(_metrics(server), 'mserve_batch_size_count{model="scale"}')
    started = time.perf_counter()
    answer = httpx.post(
        f"{server.url}/v2/models/scale/infer", json=BODY, headers={"Inference-Timeout-Ms": "200"}, timeout=30
    )
    elapsed = time.perf_counter() - started
    assert answer.status_code == 504, answer.text
    assert "Inference-Timeout-Ms" in answer.json()["error"]
    assert 0.2 <= elapsed < HOLD_S, elapsed
    time.sleep(HOLD_S + 0.5)  # past the batch's own flush: its only member was dropped
    metrics = _metrics(server)
    assert _metric(metrics, 'mserve_batch_size_count{model="scale"}') == runs_before
    assert _metric(metrics, 'mserve_requests_dropped_total{model="scale",reason="deadline"}') >= 1
    assert _metric(metrics, 'mserve_requests_total{model="scale",protocol="rest",status="504"}') >= 1


def test_grpc_deadline_gives_deadline_exceeded(held: tuple[Server, int]) -> None:
    server, grpc_port = held
    client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    tensor = triton.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    started = time.perf_counter()
    with pytest.raises(triton.InferenceServerException) as expired:
        client.infer("scale", [tensor], client_timeout=0.3)
    client.close()
    assert expired.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert time.perf_counter() - started < HOLD_S
    dropped = 0.0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not dropped:
        metrics = _metrics(server)
        dropped = sum(
            _metric(metrics, f'mserve_requests_dropped_total{{model="scale",reason="{reason}"}}')
            for reason in ("deadline", "client_gone")
        )
        time.sleep(0.05)
    assert dropped >= 1, metrics


@pytest.mark.parametrize("value", ["-5", "0", "1e30", "100000000", "9" * 5000, "soon", "", "12.5", "١٢"])
def test_a_hostile_deadline_header_is_a_400_naming_it(held: tuple[Server, int], value: str) -> None:
    server, _ = held
    answer = httpx.post(
        f"{server.url}/v2/models/scale/infer",
        json=BODY,
        headers={"Inference-Timeout-Ms": value.encode()},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert "Inference-Timeout-Ms" in answer.json()["error"]


def test_the_server_default_deadline_applies_without_a_header(tmp_path: Path) -> None:
    model = build_scale_model(tmp_path / "scale.onnx")
    args = ("--max-batch-size", "64", "--max-batch-delay-ms", "3000", "--request-timeout-s", "0.3")
    with serving(model, "scale", tmp_path / "mserve.log", *args) as server:
        answer = httpx.post(f"{server.url}/v2/models/scale/infer", json=BODY, timeout=30)
        # A header asking for more than the server allows gets the server's deadline.
        longer = httpx.post(
            f"{server.url}/v2/models/scale/infer", json=BODY, headers={"Inference-Timeout-Ms": "60000"}
        )
    assert answer.status_code == 504, answer.text
    assert "MSERVE_REQUEST_TIMEOUT_S" in answer.json()["error"]
    assert longer.status_code == 504, longer.text


def test_a_client_that_disconnects_has_its_queued_work_dropped(held: tuple[Server, int]) -> None:
    server, _ = held
    before = _metrics(server)
    body = httpx.Request("POST", f"{server.url}/v2/models/scale/infer", json=BODY).content
    head = (
        f"POST /v2/models/scale/infer HTTP/1.1\r\nHost: {server.host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body)
        _wait_in_flight(server, 1)
    # Gone long before its batch flushes; the batch then has no member left to run.
    deadline = time.monotonic() + HOLD_S + 5
    while time.monotonic() < deadline:
        metrics = _metrics(server)
        if _metric(metrics, 'mserve_requests_dropped_total{model="scale",reason="client_gone"}') > _metric(
            before, 'mserve_requests_dropped_total{model="scale",reason="client_gone"}'
        ):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the disconnect was not noticed:\n{metrics}")
    time.sleep(HOLD_S + 0.5)
    runs = 'mserve_batch_size_count{model="scale"}'
    assert _metric(_metrics(server), runs) == _metric(before, runs)
    assert _metric(_metrics(server), 'mserve_requests_in_flight{model="scale"}') == 0
