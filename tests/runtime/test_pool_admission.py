"""Admission per model in a pool: a model flooded with slow requests (or slow uploads) takes at
most its share of the process's slots; beyond it its requests get 503 + Retry-After (gRPC
UNAVAILABLE) naming the model and the setting, while another model keeps answering.

Real `mserve serve --pool` processes, real onnxruntime; latency bounds are relative to the
unloaded latency measured in the same test, and generous."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.support.models import build_tiny_mlp
from tests.support.pool_serving import metric, serving_pool
from tests.support.ports import free_port
from tests.support.serving import MSERVE, Server

LIGHT = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
HEAVY_ROWS = 256
HEAVY = {
    "inputs": [
        {"name": "x", "shape": [HEAVY_ROWS, 16], "datatype": "FP32", "data": [0.5] * (16 * HEAVY_ROWS)}
    ]
}
SETTING = "MSERVE_POOL_MODEL_MAX_IN_FLIGHT"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pool-admission")
    # 16 -> 2048 -> 2048 -> 4: a 256-row request is about 2 GFLOP, tens of ms of one core.
    build_tiny_mlp(directory / "heavy.onnx", sizes=(16, 2048, 2048, 4))
    build_tiny_mlp(directory / "light.onnx")
    return directory


def _raw_post_headers(server: Server, path: str, body: bytes) -> socket.socket:
    """A request whose headers are sent and whose body is not (yet): a slow upload."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def _finish(sock: socket.socket, body: bytes) -> int:
    sock.sendall(body)
    status = int(sock.recv(65536).split(b" ", 2)[1])
    sock.close()
    return status


def _wait_in_flight(server: Server, model: str, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while metric(server.metrics(), "mserve_requests_in_flight", model=model) < count:
        assert time.monotonic() < deadline, f"{model} never reached {count} requests in flight"
        time.sleep(0.05)


def _grpc_infer(server: Server, model: str) -> pb.ModelInferResponse:
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 16])
    tensor.contents.fp32_contents.extend([0.5] * 16)
    request = pb.ModelInferRequest(model_name=model, inputs=[tensor])
    with grpc.insecure_channel(server.grpc_url) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)


@pytest.fixture(scope="module")
def capped(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Process cap 8, per-model cap 2, gRPC on."""
    log = tmp_path_factory.mktemp("pool-admission-capped") / "mserve.log"
    env = {SETTING: "2"}
    with serving_pool(
        repository,
        log,
        "--max-in-flight",
        "8",
        "--pool-preload",
        "heavy,light",
        env=env,
        grpc=True,
        timeout=120,
    ) as server:
        yield server


def test_a_model_at_its_cap_is_refused_naming_it_while_another_serves(capped: Server) -> None:
    body = orjson.dumps(LIGHT)
    held = [_raw_post_headers(capped, "/v2/models/heavy/infer", body) for _ in range(2)]
    try:
        _wait_in_flight(capped, "heavy", 2)
        refused = httpx.post(f"{capped.url}/v2/models/heavy/infer", json=LIGHT, timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "model 'heavy'" in refused.json()["error"]
        assert SETTING in refused.json()["error"]
        with pytest.raises(grpc.RpcError) as caught:
            _grpc_infer(capped, "heavy")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "model 'heavy'" in caught.value.details()
        assert SETTING in caught.value.details()
        assert ("grpc-retry-pushback-ms", "1000") in tuple(caught.value.trailing_metadata())
        # The versioned and V1 routes count against the same cap.
        versioned = httpx.post(f"{capped.url}/v2/models/heavy/versions/1/infer", json=LIGHT, timeout=10)
        assert versioned.status_code == 503
        v1 = httpx.post(f"{capped.url}/v1/models/heavy:predict", json={"instances": [[0.5] * 16]}, timeout=10)
        assert v1.status_code == 503
        # The other model is served over both protocols: its share of the process is free.
        for _ in range(5):
            assert (
                httpx.post(f"{capped.url}/v2/models/light/infer", json=LIGHT, timeout=10).status_code == 200
            )
        assert list(_grpc_infer(capped, "light").outputs[0].shape) == [1, 4]
    finally:
        statuses = [_finish(sock, body) for sock in held]
    assert statuses == [200, 200], "the held requests are served once their bodies arrive"
    text = capped.metrics()
    assert metric(text, "mserve_requests_shed_total", model="heavy", protocol="rest") >= 3
    assert metric(text, "mserve_requests_shed_total", model="heavy", protocol="grpc") >= 1
    assert metric(text, "mserve_requests_shed_total", model="light", protocol="rest") == 0
    assert metric(text, "mserve_requests_in_flight_limit", model="heavy") == 2
    # Room again once they are done.
    assert httpx.post(f"{capped.url}/v2/models/heavy/infer", json=LIGHT, timeout=10).status_code == 200


def test_unknown_names_take_no_slot_and_stay_404(capped: Server) -> None:
    for name in ("ghost", "..", "x" * 300):
        response = httpx.post(f"{capped.url}/v2/models/{name}/infer", json=LIGHT, timeout=10)
        assert response.status_code == 404, response.text
    assert "ghost" not in capped.metrics()


def test_a_flood_of_slow_requests_to_one_model_leaves_another_serving(
    repository: Path, tmp_path: Path
) -> None:
    """24 clients send 256-row requests to `heavy` without pause; `light`'s requests all succeed,
    within a generous multiple of their unloaded latency; `heavy` is shed with its name."""
    args = ("--max-in-flight", "16", "--threads", "1", "--pool-preload", "heavy,light")
    with serving_pool(repository, tmp_path / "mserve.log", *args) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:

            def light_latencies(count: int) -> list[float]:
                seconds = []
                for _ in range(count):
                    started = time.perf_counter()
                    response = client.post("/v2/models/light/infer", json=LIGHT)
                    seconds.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
                return seconds

            light_latencies(5)
            unloaded = statistics.median(light_latencies(30))

            stop = threading.Event()
            heavy_statuses: list[int] = []
            refusals: list[str] = []

            def flood() -> None:
                with httpx.Client(base_url=server.url, timeout=60) as own:
                    while not stop.is_set():
                        response = own.post("/v2/models/heavy/infer", json=HEAVY)
                        heavy_statuses.append(response.status_code)
                        if response.status_code == 503:
                            refusals.append(response.json()["error"])
                            time.sleep(0.01)  # a client that retries at once, short of a busy loop

            flooders = [threading.Thread(target=flood) for _ in range(24)]
            for thread in flooders:
                thread.start()
            try:
                _wait_in_flight(server, "heavy", 4)
                loaded = light_latencies(40)
            finally:
                stop.set()
                for thread in flooders:
                    thread.join(60)
        text = server.metrics()
    loaded_median = statistics.median(loaded)
    print(
        f"light p50 unloaded {1000 * unloaded:.1f} ms, under heavy's flood {1000 * loaded_median:.1f} ms; "
        f"heavy: {heavy_statuses.count(200)} served, {heavy_statuses.count(503)} refused"
    )
    assert heavy_statuses.count(200) > 0, "the flooded model is served too, up to its share"
    assert refusals, "24 clients against a share of 8 slots: some were refused"
    assert set(heavy_statuses) <= {200, 503}
    assert all("model 'heavy'" in r and (SETTING in r or "MSERVE_MAX_QUEUE_DELAY_MS" in r) for r in refusals)
    assert metric(text, "mserve_requests_shed_total", model="light", protocol="rest") == 0
    # Generous: the two models share two cores with the flood's runs, the test's own clients
    # and whatever else the machine runs. Without the per-model cap `light` gets 503s instead.
    assert loaded_median < max(20 * unloaded, unloaded + 0.5), (unloaded, loaded_median)


def _start_fails(repository: Path, *args: str, env: dict[str, str]) -> str:
    cmd = [str(MSERVE), "serve", "--pool", str(repository), "--port", str(free_port())]
    cmd += ["--grpc-port", "0", "--admin-port", str(free_port()), "--host", "127.0.0.1", *args]
    run = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode != 0, run.stdout + run.stderr
    return run.stdout + run.stderr


@pytest.mark.parametrize("value", ["-1", "abc", "2.5", "1" + "0" * 30, "17"])
def test_a_careless_per_model_cap_stops_start_up_naming_it(repository: Path, value: str) -> None:
    out = _start_fails(repository, "--max-in-flight", "16", env={SETTING: value})
    assert SETTING in out, out
    assert "Traceback" not in out, out


def test_the_default_per_model_cap_is_half_the_process_cap(repository: Path, tmp_path: Path) -> None:
    with serving_pool(repository, tmp_path / "mserve.log", "--max-in-flight", "10") as server:
        assert httpx.post(f"{server.url}/v2/models/light/infer", json=LIGHT, timeout=10).status_code == 200
        assert metric(server.metrics(), "mserve_requests_in_flight_limit", model="light") == 5
