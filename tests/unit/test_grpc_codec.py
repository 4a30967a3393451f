"""The V2 gRPC codec: protobuf messages to and from the runtime's inference types."""

from __future__ import annotations

import numpy as np
import pytest
from mserve_runtime.errors import InvalidInput
from mserve_runtime.grpc_v2 import codec
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb
from mserve_runtime.inference_types import InferenceResponse, OutputTensor
from mserve_runtime.request_limits import RequestLimits

LIMITS = RequestLimits.derive(1 << 30)


def request_with(datatype: str, shape: list[int], field: str, values: list) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


def test_parameters_round_trip_with_their_types() -> None:
    message = pb.ModelInferResponse()
    params = {"flag": True, "count": -3, "big": 1 << 63, "ratio": 0.5, "tag": "x"}

    codec.parameters_to_pb(params, message.parameters)

    assert codec.parameters_from_pb(message.parameters) == params
    assert message.parameters["big"].WhichOneof("parameter_choice") == "uint64_param"


def test_typed_int8_is_range_checked_not_wrapped() -> None:
    good = codec.decode_infer_request(request_with("INT8", [1, 2], "int_contents", [-128, 127]), LIMITS)
    assert good.inputs[0].data.dtype == np.int8
    assert good.inputs[0].data.tolist() == [[-128, 127]]

    with pytest.raises(InvalidInput, match=r"INT8 values must lie in \[-128, 127\], received \[-129, 1\]"):
        codec.decode_infer_request(request_with("INT8", [1, 2], "int_contents", [-129, 1]), LIMITS)


def test_negative_dimensions_are_rejected() -> None:
    with pytest.raises(InvalidInput, match=r"input 'x': shape must hold non-negative dimensions"):
        codec.decode_infer_request(request_with("FP32", [-1, -2], "fp32_contents", [1.0, 2.0]), LIMITS)


def test_raw_and_typed_contents_are_not_mixed() -> None:
    request = request_with("FP32", [1], "fp32_contents", [1.0])
    request.raw_input_contents.append(b"\0\0\0\0")

    with pytest.raises(InvalidInput, match="contents must be empty when raw_input_contents is used"):
        codec.decode_infer_request(request, LIMITS)


def test_bytes_contents_decode_to_text() -> None:
    decoded = codec.decode_infer_request(
        request_with("BYTES", [2], "bytes_contents", [b"hi", "é".encode()]), LIMITS
    )

    assert decoded.inputs[0].data.tolist() == ["hi", "é"]


def test_shared_memory_inputs_are_refused_by_name() -> None:
    request = request_with("FP32", [1], "fp32_contents", [1.0])
    request.inputs[0].parameters["shared_memory_region"].string_param = "region0"

    with pytest.raises(InvalidInput, match="input 'x': shared memory inputs are not supported"):
        codec.decode_infer_request(request, LIMITS)


def response_of(*datatypes: str) -> InferenceResponse:
    outputs = [
        OutputTensor(f"y{i}", dt, [1], np.zeros(1, dtype=np.float16)) for i, dt in enumerate(datatypes)
    ]
    return InferenceResponse("m", "1", None, outputs)


def test_raw_answers_for_raw_requests_and_for_fp16() -> None:
    raw = pb.ModelInferRequest(raw_input_contents=[b""])
    raw.inputs.add(name="x")
    typed = request_with("FP32", [1], "fp32_contents", [1.0])

    assert codec.answers_raw(raw, response_of("FP32"))
    assert not codec.answers_raw(typed, response_of("FP32"))
    assert codec.answers_raw(typed, response_of("FP32", "FP16"))


def test_encode_typed_and_raw() -> None:
    response = InferenceResponse(
        "m", "1", "id-1", [OutputTensor("y", "FP32", [2], np.array([1.5, -2.0], dtype=np.float32))], {"a": 1}
    )

    typed = codec.encode_infer_response(response, raw=False)
    raw = codec.encode_infer_response(response, raw=True)

    assert list(typed.outputs[0].contents.fp32_contents) == [1.5, -2.0]
    assert typed.id == "id-1"
    assert typed.parameters["a"].int64_param == 1
    assert raw.raw_output_contents[0] == np.array([1.5, -2.0], dtype="<f4").tobytes()
    assert not raw.outputs[0].HasField("contents")
