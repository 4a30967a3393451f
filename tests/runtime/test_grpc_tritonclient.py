"""The V2 gRPC endpoint of a real `mserve serve` process, driven by an unmodified tritonclient.grpc.

Every answer is compared with onnxruntime called directly on the same model file.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support.models import DATATYPES, DigitsModel, build_datatypes_model, sample_datatype_array
from tests.support.serving import Server, serving

MAX_REQUEST_BYTES = 1 << 20
TYPED_DATATYPES = [dt for dt in DATATYPES if dt != "FP16"]  # FP16 has no typed contents field


@dataclass
class GrpcTarget:
    served: Server
    model_path: Path
    client: triton.InferenceServerClient
    stub: service_pb2_grpc.GRPCInferenceServiceStub
    session: ort.InferenceSession

    @property
    def name(self) -> str:
        return self.served.name


@pytest.fixture(scope="module")
def target_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., GrpcTarget]]:
    stack: list = []

    def start(name: str, path: Path, *args: str) -> GrpcTarget:
        log = tmp_path_factory.mktemp(name) / "mserve.log"
        context = serving(path, name, log, "--threads", "1", *args, grpc=True)
        served = context.__enter__()
        stack.append(context)
        channel = grpc.insecure_channel(served.grpc_url)
        stack.append(channel)
        return GrpcTarget(
            served,
            path,
            triton.InferenceServerClient(served.grpc_url),
            service_pb2_grpc.GRPCInferenceServiceStub(channel),
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]),
        )

    yield start
    for item in reversed(stack):
        if isinstance(item, grpc.Channel):
            item.close()
        else:
            item.__exit__(None, None, None)


@pytest.fixture(scope="module")
def grpc_digits(target_factory: Callable[..., GrpcTarget], digits: DigitsModel) -> GrpcTarget:
    return target_factory("digits", digits.path, "--max-request-bytes", str(MAX_REQUEST_BYTES))


@pytest.fixture(scope="module")
def grpc_datatypes(target_factory: Callable[..., GrpcTarget], datatypes_model: Path) -> GrpcTarget:
    return target_factory("datatypes", datatypes_model)


@pytest.fixture(scope="module")
def grpc_typed(target_factory: Callable[..., GrpcTarget], model_dir: Path) -> GrpcTarget:
    return target_factory("typed", build_datatypes_model(model_dir / "typed.onnx", TYPED_DATATYPES))


def digits_input(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 64), dtype=np.float32)


def triton_input(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def assert_serves(target: GrpcTarget) -> None:
    """After a bad request: the process is alive and a good request still gets the right answer."""
    assert target.served.alive(), target.served.logs()
    x = digits_input(2, seed=99)
    result = target.client.infer(target.name, [triton_input("x", x, "FP32")])
    expected = target.session.run(["logits"], {"x": x})[0]
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-6)


def expect_error(call: Callable[[], object], code: str, *words: str) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == f"StatusCode.{code}", caught.value
    for word in words:
        assert word in caught.value.message()
    return caught.value.message()


def expect_rpc_error(call: Callable[[], object], code: grpc.StatusCode, *words: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    for word in words:
        assert word in caught.value.details()


# -- health and metadata -------------------------------------------------------------------


def test_health_mirrors_the_rest_side(grpc_digits: GrpcTarget) -> None:
    assert grpc_digits.client.is_server_live()
    assert grpc_digits.client.is_server_ready()
    assert grpc_digits.client.is_model_ready("digits")
    assert grpc_digits.client.is_model_ready("digits", "1")
    with urllib.request.urlopen(f"{grpc_digits.served.url}/v2/health/ready") as resp:
        assert resp.status == 200


def test_model_ready_for_an_unknown_model_is_not_found(grpc_digits: GrpcTarget) -> None:
    expect_error(
        lambda: grpc_digits.client.is_model_ready("nope"), "NOT_FOUND", "model 'nope' is not served here"
    )


def test_server_and_model_metadata(grpc_digits: GrpcTarget) -> None:
    server = grpc_digits.client.get_server_metadata(as_json=True)
    model = grpc_digits.client.get_model_metadata("digits", as_json=True)

    assert server["name"] == "mserve"
    assert "binary_tensor_data" in server["extensions"]
    assert model["name"] == "digits"
    assert model["versions"] == ["1"]
    assert model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert model["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": ["-1", "10"]},
        {"name": "label", "datatype": "INT64", "shape": ["-1"]},
    ]


# -- inference -----------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_answers_match_onnxruntime_at_any_batch_size(grpc_digits: GrpcTarget, rows: int) -> None:
    x = digits_input(rows, seed=rows)

    result = grpc_digits.client.infer("digits", [triton_input("x", x, "FP32")], request_id=f"req-{rows}")

    logits, label = grpc_digits.session.run(["logits", "label"], {"x": x})
    np.testing.assert_allclose(result.as_numpy("logits"), logits, rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == (f"req-{rows}", "digits", "1")


def test_only_the_requested_outputs_come_back(grpc_digits: GrpcTarget) -> None:
    x = digits_input(3)

    result = grpc_digits.client.infer(
        "digits", [triton_input("x", x, "FP32")], outputs=[triton.InferRequestedOutput("label")]
    )

    assert [o.name for o in result.get_response().outputs] == ["label"]
    assert result.as_numpy("logits") is None
    np.testing.assert_array_equal(result.as_numpy("label"), grpc_digits.session.run(["label"], {"x": x})[0])


def test_a_versioned_request_with_parameters(grpc_digits: GrpcTarget) -> None:
    x = digits_input(2)

    result = grpc_digits.client.infer(
        "digits",
        [triton_input("x", x, "FP32")],
        model_version="1",
        parameters={"tag": "canary", "attempt": 2, "trace": True},
    )

    expected = grpc_digits.session.run(["logits"], {"x": x})[0]
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-6)


@pytest.mark.parametrize("rows", [1, 5])
def test_every_datatype_round_trips_in_raw_contents(grpc_datatypes: GrpcTarget, rows: int) -> None:
    arrays = {dt: sample_datatype_array(dt, rows, seed=rows) for dt in DATATYPES}
    inputs = [triton_input(f"in_{dt}", a, dt) for dt, a in arrays.items()]

    result = grpc_datatypes.client.infer("datatypes", inputs)

    expected = grpc_datatypes.session.run(None, {f"in_{dt}": a for dt, a in arrays.items()})
    for (dt, sent), want in zip(arrays.items(), expected, strict=True):
        got = result.as_numpy(f"out_{dt}")
        if dt == "BYTES":
            # tritonclient hands BYTES back as bytes objects.
            assert [g.decode() for g in got.reshape(-1)] == list(want.reshape(-1)) == list(sent.reshape(-1))
        else:
            assert got.dtype == want.dtype, dt
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got, sent)


# The InferTensorContents field of each datatype, as the protocol defines it.
FIELD_OF = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def typed_request(model: str, arrays: dict[str, tuple[str, np.ndarray]]) -> service_pb2.ModelInferRequest:
    """A ModelInferRequest with typed contents (tritonclient's own messages, filled by hand)."""
    request = service_pb2.ModelInferRequest(model_name=model, id="typed")
    for name, (datatype, array) in arrays.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        values = array.reshape(-1).tolist()
        if datatype == "BYTES":
            values = [v.encode() if isinstance(v, str) else v for v in values]
        getattr(tensor.contents, FIELD_OF.get(datatype, "fp32_contents")).extend(values)
    return request


@pytest.mark.parametrize("rows", [1, 4])
def test_every_typed_datatype_round_trips_in_typed_contents(grpc_typed: GrpcTarget, rows: int) -> None:
    arrays = {dt: sample_datatype_array(dt, rows, seed=rows) for dt in TYPED_DATATYPES}

    response = grpc_typed.stub.ModelInfer(
        typed_request("typed", {f"in_{dt}": (dt, a) for dt, a in arrays.items()})
    )

    # A typed request gets a typed answer, as KServe does (tritonclient's InferResult reads
    # only raw numeric outputs, which is what its raw requests get).
    assert len(response.raw_output_contents) == 0
    expected = grpc_typed.session.run(None, {f"in_{dt}": a for dt, a in arrays.items()})
    for (dt, sent), want, output in zip(arrays.items(), expected, response.outputs, strict=True):
        assert (output.name, output.datatype, list(output.shape)) == (f"out_{dt}", dt, [rows, 3])
        values = list(getattr(output.contents, FIELD_OF[dt]))
        if dt == "BYTES":
            assert [v.decode() for v in values] == list(want.reshape(-1)) == list(sent.reshape(-1))
        else:
            np.testing.assert_array_equal(np.array(values, dtype=want.dtype).reshape(want.shape), want)
    assert response.id == "typed"


def test_typed_fp32_answers_match_onnxruntime(grpc_digits: GrpcTarget) -> None:
    x = digits_input(3)

    response = grpc_digits.stub.ModelInfer(typed_request("digits", {"x": ("FP32", x)}))

    logits, label = grpc_digits.session.run(["logits", "label"], {"x": x})
    got = np.array(response.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(3, 10)
    np.testing.assert_allclose(got, logits, rtol=1e-6)
    assert list(response.outputs[1].contents.int64_contents) == list(label)


# -- bad input: status code and words, then a good request still works ------------------------


def test_unknown_model(grpc_digits: GrpcTarget) -> None:
    x = digits_input(1)
    expect_error(
        lambda: grpc_digits.client.infer("nope", [triton_input("x", x, "FP32")]),
        "NOT_FOUND",
        "model 'nope' is not served here",
    )
    assert_serves(grpc_digits)


def test_unknown_version(grpc_digits: GrpcTarget) -> None:
    x = digits_input(1)
    expect_error(
        lambda: grpc_digits.client.infer("digits", [triton_input("x", x, "FP32")], model_version="7"),
        "NOT_FOUND",
        "no version '7'",
    )
    assert_serves(grpc_digits)


def test_wrong_datatype(grpc_digits: GrpcTarget) -> None:
    x = digits_input(2).astype(np.float64)
    expect_error(
        lambda: grpc_digits.client.infer("digits", [triton_input("x", x, "FP64")]),
        "INVALID_ARGUMENT",
        "input 'x': expected datatype FP32, received FP64",
    )
    assert_serves(grpc_digits)


def test_wrong_shape(grpc_digits: GrpcTarget) -> None:
    x = np.zeros((2, 63), dtype=np.float32)
    expect_error(
        lambda: grpc_digits.client.infer("digits", [triton_input("x", x, "FP32")]),
        "INVALID_ARGUMENT",
        "input 'x': expected shape [-1, 64], received [2, 63]",
    )
    assert_serves(grpc_digits)


def test_unknown_input_and_missing_input(grpc_digits: GrpcTarget) -> None:
    x = digits_input(1)
    expect_error(
        lambda: grpc_digits.client.infer("digits", [triton_input("pixels", x, "FP32")]),
        "INVALID_ARGUMENT",
        "unknown input 'pixels'",
        "x (FP32 [-1, 64])",
    )
    expect_error(lambda: grpc_digits.client.infer("digits", []), "INVALID_ARGUMENT", "missing input 'x'")
    assert_serves(grpc_digits)


def test_unknown_output(grpc_digits: GrpcTarget) -> None:
    x = digits_input(1)
    expect_error(
        lambda: grpc_digits.client.infer(
            "digits", [triton_input("x", x, "FP32")], outputs=[triton.InferRequestedOutput("probs")]
        ),
        "INVALID_ARGUMENT",
        "unknown output 'probs'",
        "logits, label",
    )
    assert_serves(grpc_digits)


def test_raw_contents_of_the_wrong_size(grpc_digits: GrpcTarget) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 64])
    request.raw_input_contents.append(b"\0" * (2 * 64 * 4 - 4))

    expect_rpc_error(
        lambda: grpc_digits.stub.ModelInfer(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'x': shape [2, 64] of FP32 needs 512 bytes, received 508",
    )
    assert_serves(grpc_digits)


def test_raw_contents_not_one_per_input(grpc_digits: GrpcTarget) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.extend([b"\0" * 256, b"\0" * 256])

    expect_rpc_error(
        lambda: grpc_digits.stub.ModelInfer(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw_input_contents has 2 entries for 1 inputs",
    )
    assert_serves(grpc_digits)


def test_typed_contents_of_the_wrong_count_or_field(grpc_digits: GrpcTarget) -> None:
    short = typed_request("digits", {"x": ("FP32", digits_input(2))})
    del short.inputs[0].contents.fp32_contents[-1]
    wrong_field = service_pb2.ModelInferRequest(model_name="digits")
    wrong_field.inputs.add(name="x", datatype="FP32", shape=[1, 64]).contents.fp64_contents.extend([0.0] * 64)

    expect_rpc_error(
        lambda: grpc_digits.stub.ModelInfer(short),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'x': shape [2, 64] needs 128 FP32 elements in contents.fp32_contents, received 127",
    )
    expect_rpc_error(
        lambda: grpc_digits.stub.ModelInfer(wrong_field),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'x': datatype FP32 goes in contents.fp32_contents, received fp64_contents",
    )
    assert_serves(grpc_digits)


def test_typed_values_out_of_range_for_the_datatype(grpc_typed: GrpcTarget) -> None:
    arrays = {f"in_{dt}": (dt, sample_datatype_array(dt, 1)) for dt in TYPED_DATATYPES}
    request = typed_request("typed", arrays)
    for tensor in request.inputs:
        if tensor.name == "in_INT8":
            tensor.contents.int_contents[0] = 300

    expect_rpc_error(
        lambda: grpc_typed.stub.ModelInfer(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'in_INT8': INT8 values must lie in [-128, 127], received",
    )
    assert grpc_typed.served.alive()


def test_fp16_needs_raw_contents(grpc_datatypes: GrpcTarget) -> None:
    request = typed_request("datatypes", {"in_FP16": ("FP16", np.zeros((1, 3), dtype=np.float16))})

    expect_rpc_error(
        lambda: grpc_datatypes.stub.ModelInfer(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'in_FP16': FP16 has no typed contents field; send it in raw_input_contents",
    )
    assert grpc_datatypes.served.alive()


def test_malformed_bytes_elements(grpc_datatypes: GrpcTarget) -> None:
    arrays = {dt: sample_datatype_array(dt, 1) for dt in DATATYPES}
    request = service_pb2.ModelInferRequest(model_name="datatypes")
    for dt in DATATYPES:
        request.inputs.add(name=f"in_{dt}", datatype=dt, shape=[1, 3])
        if dt == "BYTES":
            # Three elements promised; the second length prefix says 100 bytes, 2 follow.
            request.raw_input_contents.append(b"\1\0\0\0a" + b"\x64\0\0\0ab")
        else:
            request.raw_input_contents.append(arrays[dt].tobytes())

    expect_rpc_error(
        lambda: grpc_datatypes.stub.ModelInfer(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'in_BYTES': BYTES element 1 declares 100 bytes but only 2 remain",
    )
    assert grpc_datatypes.served.alive()


def test_oversized_request_is_resource_exhausted(grpc_digits: GrpcTarget) -> None:
    x = np.zeros((MAX_REQUEST_BYTES // 256 + 10, 64), dtype=np.float32)
    expect_error(
        lambda: grpc_digits.client.infer("digits", [triton_input("x", x, "FP32")]),
        "RESOURCE_EXHAUSTED",
        "larger than max",
    )
    assert_serves(grpc_digits)


def test_rpcs_of_triton_we_do_not_serve_are_unimplemented(grpc_digits: GrpcTarget) -> None:
    expect_error(lambda: grpc_digits.client.get_inference_statistics("digits"), "UNIMPLEMENTED")
    expect_error(lambda: grpc_digits.client.get_model_repository_index(), "UNIMPLEMENTED")
    assert_serves(grpc_digits)


def test_grpc_requests_are_counted_by_status(grpc_digits: GrpcTarget) -> None:
    assert_serves(grpc_digits)
    expect_error(lambda: grpc_digits.client.infer("digits", []), "INVALID_ARGUMENT")

    with urllib.request.urlopen(f"{grpc_digits.served.admin_url}/metrics") as resp:
        metrics = resp.read().decode()

    def count(status: str) -> float:
        pattern = rf'mserve_requests_total{{[^}}]*protocol="grpc"[^}}]*status="{status}"[^}}]*}} (\S+)'
        match = re.search(pattern, metrics)
        assert match, f"no gRPC {status} counter in /metrics"
        return float(match.group(1))

    assert count("OK") >= 1
    assert count("INVALID_ARGUMENT") >= 1
