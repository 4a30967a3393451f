"""Requests past the limits, or with shapes numpy must not see, are refused before allocation.

One real `mserve serve` process with small limits; each class of hostile request is sent
over REST and gRPC, answered 4xx / INVALID_ARGUMENT naming the tensor (or the setting),
and a normal request succeeds right after.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from models import DigitsModel
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from served import Server, free_port, serving

MAX_ELEMENTS = 100_000
MAX_JSON_BYTES = 1_000_000
MAX_REQUEST_BYTES = 2_000_000
GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


class Limited:
    def __init__(self, server: Server, grpc_port: int) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def rest(
        self, body: object, headers: dict[str, str] | None = None, path: str = "/v2/models/digits/infer"
    ):
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        with self.server.client() as http:
            return http.post(path, content=content, headers=headers or {})

    def grpc_error(self, request: pb.ModelInferRequest) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            self.stub.ModelInfer(request, timeout=30)
        return caught.value

    def assert_still_serving(self) -> None:
        assert self.rest(GOOD).status_code == 200
        request = pb.ModelInferRequest(model_name="digits")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 64]).contents.fp32_contents.extend([0.5] * 64)
        assert [o.name for o in self.stub.ModelInfer(request, timeout=30).outputs] == ["logits", "label"]
        assert self.server.alive()


@pytest.fixture(scope="module")
def limited(digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    log = tmp_path_factory.mktemp("limits") / "mserve.log"
    grpc_port = free_port()
    env = {"MSERVE_MAX_ELEMENTS": str(MAX_ELEMENTS), "MSERVE_MAX_JSON_BYTES": str(MAX_JSON_BYTES)}
    args = ("--grpc-port", str(grpc_port), "--max-request-bytes", str(MAX_REQUEST_BYTES))
    with serving(digits.path, "digits", log, *args, env=env) as server:
        target = Limited(server, grpc_port)
        yield target
        target.channel.close()
        assert "Traceback" not in server.logs()


def _tensor(shape: list[int], data: list, datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}


def _grpc_request(shape: list[int], values: list[float] | None = None, raw: bytes | None = None):
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=shape)
    if raw is not None:
        request.raw_input_contents.append(raw)
    else:
        tensor.contents.fp32_contents.extend(values or [])
    return request


# (case, shape, JSON data, words the message must hold)
SHAPES = [
    ("more than 64 dimensions", [1] * 65, [0.5], ["'x'", "65 dimensions", "at most 64"]),
    ("huge product beside a zero dim", [0, 1 << 40, 1 << 40], [], ["'x'", "MSERVE_MAX_ELEMENTS"]),
    ("negative dimension", [-1, 64], [0.5] * 64, ["'x'", "non-negative"]),
    ("data does not match the shape", [1, 64], [0.5] * 10, ["'x'", "needs 64", "10"]),
    (
        "more elements than the limit",
        [2000, 64],
        [],
        ["'x'", f"limit of {MAX_ELEMENTS}", "MSERVE_MAX_ELEMENTS"],
    ),
]


@pytest.mark.parametrize(("case", "shape", "data", "words"), SHAPES, ids=[c[0] for c in SHAPES])
def test_rest_refuses_shape_before_allocating(
    limited: Limited, case: str, shape: list[int], data: list, words: list[str]
) -> None:
    r = limited.rest(_tensor(shape, data))
    assert r.status_code == 400, r.text
    for word in words:
        assert word in r.json()["error"]
    limited.assert_still_serving()


@pytest.mark.parametrize(("case", "shape", "data", "words"), SHAPES, ids=[c[0] for c in SHAPES])
def test_grpc_refuses_shape_before_allocating(
    limited: Limited, case: str, shape: list[int], data: list, words: list[str]
) -> None:
    error = limited.grpc_error(_grpc_request(shape, data))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    for word in words:
        assert word in error.details()
    limited.assert_still_serving()


def test_element_limit_counts_the_whole_request(limited: Limited) -> None:
    half = {
        "name": "x",
        "datatype": "FP32",
        "shape": [900, 64],
        "parameters": {"binary_data_size": 900 * 256},
    }
    header = orjson.dumps({"inputs": [half, half]})
    body = header + bytes(2 * 900 * 256)
    r = limited.rest(body, {"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400, r.text
    assert "'x'" in r.json()["error"]
    assert "MSERVE_MAX_ELEMENTS" in r.json()["error"]

    request = _grpc_request([900, 64], raw=bytes(900 * 256))
    request.inputs.add(name="x", datatype="FP32", shape=[900, 64])
    request.raw_input_contents.append(bytes(900 * 256))
    error = limited.grpc_error(request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MSERVE_MAX_ELEMENTS" in error.details()
    limited.assert_still_serving()


def test_deeply_nested_bytes_data_is_400_not_recursion(limited: Limited) -> None:
    deep = b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ' + b"[" * 1000
    deep += b'"a"' + b"]" * 1000 + b"}]}"
    r = limited.rest(deep)
    assert r.status_code == 400, r.text
    assert "'x'" in r.json()["error"]
    assert "nested deeper" in r.json()["error"]
    instances = b'{"instances": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}"
    r = limited.rest(instances, path="/v1/models/digits:predict")
    assert r.status_code == 400, r.text
    assert "'x'" in r.json()["error"]
    limited.assert_still_serving()


def test_json_over_its_limit_by_content_length_is_413(limited: Limited) -> None:
    big = _tensor([4000, 64], [0.5] * (4000 * 64))
    r = limited.rest(big)
    assert r.status_code == 413, r.text
    assert f"limit of {MAX_JSON_BYTES} bytes (MSERVE_MAX_JSON_BYTES)" in r.json()["error"]
    limited.assert_still_serving()


def test_binary_body_over_its_limit_by_content_length_is_413(limited: Limited) -> None:
    header = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [8000, 64]}]})
    r = limited.rest(header + bytes(8000 * 256), {"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 413, r.text
    assert f"limit of {MAX_REQUEST_BYTES} bytes (MSERVE_MAX_REQUEST_BYTES)" in r.json()["error"]
    limited.assert_still_serving()


def test_body_over_the_limit_while_streaming_chunked_is_413(limited: Limited) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": ['
        for _ in range(100):
            yield b"0.5," * 5000
        yield b"0.5]}]}"

    with limited.server.client() as http:
        r = http.post("/v2/models/digits/infer", content=chunks())
    assert r.status_code == 413
    assert "MSERVE_MAX_JSON_BYTES" in r.json()["error"]
    limited.assert_still_serving()


def test_grpc_message_over_the_limit_is_resource_exhausted(limited: Limited) -> None:
    error = limited.grpc_error(_grpc_request([8000, 64], raw=bytes(8000 * 256)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    limited.assert_still_serving()


def test_probes_answer_while_a_large_body_decodes(digits: DigitsModel, tmp_path: Path) -> None:
    # 3M BYTES elements in the binary extension: decoding them is a Python loop of seconds,
    # which on the event loop would hold every probe that long. (The digits model wants FP32,
    # so the answer is a 400, after the whole body has been decoded.)
    count = 3_000_000
    element = struct.pack("<I", 2) + b"ab"
    tensor = {
        "name": "x",
        "datatype": "BYTES",
        "shape": [count],
        "parameters": {"binary_data_size": count * 6},
    }
    header = orjson.dumps({"inputs": [tensor]})
    body = header + element * count
    headers = {"Inference-Header-Content-Length": str(len(header))}
    with serving(digits.path, "digits", tmp_path / "mserve.log", "--no-access-log") as server:
        answer: list[httpx.Response] = []

        def send() -> None:
            url = f"{server.url}/v2/models/digits/infer"
            answer.append(httpx.post(url, content=body, headers=headers, timeout=120))

        sender = threading.Thread(target=send)
        probes: list[float] = []
        started = time.perf_counter()
        sender.start()
        while sender.is_alive():
            sent = time.perf_counter()
            assert httpx.get(f"{server.url}/v2/health/live", timeout=10).status_code == 200
            probes.append(time.perf_counter() - sent)
            time.sleep(0.02)
        sender.join()
        took = time.perf_counter() - started
    assert answer[0].status_code == 400, answer[0].text[:300]
    assert "expected datatype FP32, received BYTES" in answer[0].json()["error"]
    # Probes kept being answered through the decode; none waited for a large part of it.
    assert len(probes) >= 5, (took, probes)
    assert max(probes) < min(1.0, took / 3), (took, sorted(probes)[-5:])
