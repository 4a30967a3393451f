"""The V2 REST codec and raw tensor bytes: every datatype both ways, and precise errors."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from mserve_runtime.datatypes import V2_TO_NUMPY, numpy_to_v2, onnx_to_v2, v2_to_numpy
from mserve_runtime.errors import InvalidInput
from mserve_runtime.inference_types import InferenceResponse, OutputTensor, RequestedOutput
from mserve_runtime.raw_tensors import decode_raw_tensor, encode_raw_tensor
from mserve_runtime.request_limits import RequestLimits
from mserve_runtime.rest_codec import decode_infer_request, encode_infer_response, parse_header_length

LIMITS = RequestLimits.derive(1 << 30)
NUMERIC = [d for d in V2_TO_NUMPY if d != "BYTES"]


def _sample(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array(["a", "", "ünï"], dtype=object).reshape(1, 3)
    if datatype == "BOOL":
        return np.array([[True, False, True]])
    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind == "f":
        return np.array([[-1.5, 0.25, 3e3]], dtype=dtype)
    info = np.iinfo(dtype)
    return np.array([[info.min, 0, info.max]], dtype=dtype)


@pytest.mark.parametrize("datatype", list(V2_TO_NUMPY))
def test_raw_round_trip(datatype: str) -> None:
    array = _sample(datatype)
    raw = bytes(encode_raw_tensor(array, datatype))
    back = decode_raw_tensor("t", datatype, [1, 3], raw)
    np.testing.assert_array_equal(back, array)


def test_bytes_wire_format_is_length_prefixed() -> None:
    raw = bytes(encode_raw_tensor(np.array(["ab", "c"], dtype=object), "BYTES"))
    assert raw == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"


@pytest.mark.parametrize("datatype", list(V2_TO_NUMPY))
def test_json_request_every_datatype(datatype: str) -> None:
    array = _sample(datatype)
    data = array.ravel().tolist()
    body = orjson.dumps({"inputs": [{"name": "t", "datatype": datatype, "shape": [1, 3], "data": data}]})
    request = decode_infer_request(body, None, LIMITS)
    tensor = request.inputs[0]
    assert tensor.data.dtype == V2_TO_NUMPY[datatype]
    np.testing.assert_array_equal(tensor.data, array)


def test_binary_inputs_are_views_of_the_body() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}
            ]
        },
    )
    body = header + x.tobytes()
    tensor = decode_infer_request(body, len(header), LIMITS).inputs[0]
    np.testing.assert_array_equal(tensor.data, x)
    assert not tensor.data.flags.owndata


def test_mixed_json_and_binary_inputs_keep_their_order() -> None:
    a = np.array([[1, 2]], dtype=np.int64)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "INT64", "shape": [1, 2], "parameters": {"binary_data_size": 16}},
                {"name": "b", "datatype": "FP32", "shape": [2], "data": [0.5, 1.5]},
            ]
        }
    )
    request = decode_infer_request(header + a.tobytes(), len(header), LIMITS)
    np.testing.assert_array_equal(request.inputs[0].data, a)
    np.testing.assert_array_equal(request.inputs[1].data, np.array([0.5, 1.5], np.float32))


def test_leftover_binary_bytes_are_rejected() -> None:
    header = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "INT8", "shape": [2], "parameters": {"binary_data_size": 2}}]}
    )
    with pytest.raises(InvalidInput, match="add up to 2"):
        decode_infer_request(header + b"\x01\x02\x03", len(header), LIMITS)


def test_truncated_bytes_element() -> None:
    with pytest.raises(InvalidInput, match="element 0 declares 10 bytes"):
        decode_raw_tensor("s", "BYTES", [1], b"\x0a\x00\x00\x00abc")


def test_non_utf8_bytes_are_rejected_with_the_reason() -> None:
    with pytest.raises(InvalidInput, match="not UTF-8"):
        decode_raw_tensor("s", "BYTES", [1], b"\x01\x00\x00\x00\xff")


def test_header_length_parsing() -> None:
    assert parse_header_length(None, 10) is None
    assert parse_header_length("4", 10) == 4
    with pytest.raises(InvalidInput, match="only 10 bytes"):
        parse_header_length("11", 10)
    with pytest.raises(InvalidInput, match="integer"):
        parse_header_length("x", 10)


def _response() -> InferenceResponse:
    outputs = [
        OutputTensor("f", "FP16", [2], np.array([1.5, -2], dtype=np.float16)),
        OutputTensor("s", "BYTES", [2], np.array(["x", "yz"], dtype=object)),
    ]
    return InferenceResponse("m", "1", "id-1", outputs)


def test_encode_json_response() -> None:
    request = decode_infer_request(orjson.dumps({"inputs": []}), None, LIMITS)
    body, header_length = encode_infer_response(_response(), request)
    assert header_length is None
    doc = orjson.loads(body)
    assert doc["id"] == "id-1"
    assert doc["outputs"][0]["data"] == [1.5, -2.0]
    assert doc["outputs"][1]["data"] == ["x", "yz"]


def test_encode_binary_per_output_and_default() -> None:
    request = decode_infer_request(
        orjson.dumps({"inputs": [], "parameters": {"binary_data_output": True}}), None, LIMITS
    )
    request.outputs = [RequestedOutput("f", None), RequestedOutput("s", False)]
    body, header_length = encode_infer_response(_response(), request)
    doc = orjson.loads(body[:header_length])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 4}
    assert doc["outputs"][1]["data"] == ["x", "yz"]
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], "<f2"), [1.5, -2])


def test_datatype_mapping() -> None:
    assert onnx_to_v2("tensor(float16)") == "FP16"
    assert onnx_to_v2("tensor(string)") == "BYTES"
    assert numpy_to_v2(np.dtype("<U3")) == "BYTES"
    assert numpy_to_v2(np.dtype(">f4")) == "FP32"
    assert v2_to_numpy("UINT64") == np.uint64
    with pytest.raises(InvalidInput, match="BF16"):
        v2_to_numpy("BF16")


def test_huge_bytes_shape_is_rejected_before_allocating() -> None:
    with pytest.raises(InvalidInput, match="ends after 2 of 1000000000000 elements"):
        decode_raw_tensor("s", "BYTES", [10**6, 10**6], b"\x00" * 8)
