"""V2 REST JSON codec with Triton's binary tensor extension, both directions.

A request body is a JSON object, optionally followed by raw tensor bytes; the
`Inference-Header-Content-Length` header says where the JSON ends. This path is hot:
it parses with orjson and checks by hand instead of building pydantic models, and binary
inputs become numpy views of the body without a copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from mserve_runtime.datatypes import V2_TO_NUMPY, v2_to_numpy
from mserve_runtime.errors import InvalidInput, PayloadTooLarge
from mserve_runtime.inference_types import (
    InferenceRequest,
    InferenceResponse,
    InputTensor,
    RequestedOutput,
)
from mserve_runtime.raw_tensors import decode_raw_tensor, encode_raw_tensor
from mserve_runtime.request_limits import RequestLimits, check_shape, flatten_json_data

HEADER_LENGTH = "inference-header-content-length"
_NUMPY_JSON = orjson.OPT_SERIALIZE_NUMPY
_SLICE = 1 << 16


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The JSON part's length from the header (None when the request has no binary part)."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise InvalidInput(
            f"Inference-Header-Content-Length must be an integer, received {value!r}"
        ) from None
    if not 0 <= length <= body_length:
        raise InvalidInput(
            f"Inference-Header-Content-Length is {length} but the body has only {body_length} bytes"
        )
    return length


def _loads(data: bytes | memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON in the request body: {exc}") from None


def _shape(name: str, value: Any) -> list[int]:
    if not isinstance(value, list) or not all(type(d) is int and d >= 0 for d in value):
        raise InvalidInput(
            f"input '{name}': shape must be a list of non-negative integers, received {value!r:.200}"
        )
    return value


def _parameters(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: parameters must be a JSON object, received {type(value).__name__}")
    return value


def _numbers(flat: list[Any], dtype: np.dtype) -> np.ndarray:
    # Slice by slice, so that a large tensor's conversion lets other threads (the event
    # loop answering probes) take the GIL in between.
    if len(flat) <= _SLICE:
        return np.asarray(flat, dtype=dtype)
    array = np.empty(len(flat), dtype=dtype)
    for start in range(0, len(flat), _SLICE):
        array[start : start + _SLICE] = flat[start : start + _SLICE]
    return array


def decode_json_tensor(name: str, datatype: str, shape: list[int], data: Any, count: int) -> np.ndarray:
    """A tensor from the JSON `data` field (flat or nested, row-major) of a checked shape."""
    dtype = v2_to_numpy(datatype)
    flat = flatten_json_data(name, data, len(shape))
    if len(flat) != count:
        raise InvalidInput(f"input '{name}': shape {shape} needs {count} elements, data has {len(flat)}")
    if datatype == "BYTES":
        for i, item in enumerate(flat):
            if not isinstance(item, str):
                raise InvalidInput(
                    f"input '{name}': BYTES element {i} must be a string, received {item!r:.40}"
                )
        array = np.empty(count, dtype=object)
        array[:] = flat
    else:
        try:
            array = _numbers(flat, dtype)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(f"input '{name}': data does not fit datatype {datatype}: {exc}") from None
        if array.ndim != 1:
            raise InvalidInput(f"input '{name}': {datatype} data must hold numbers, received {data!s:.60}")
    return array.reshape(shape)


def _decode_input(
    doc: Any, binary: memoryview | None, offset: int, limits: RequestLimits, counted: int
) -> tuple[InputTensor, int, int]:
    if not isinstance(doc, dict):
        raise InvalidInput(f"each entry of 'inputs' must be a JSON object, received {doc!s:.60}")
    name = doc.get("name")
    if not isinstance(name, str):
        raise InvalidInput(f"an input has no 'name' string: {doc!s:.80}")
    datatype = doc.get("datatype")
    if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
        raise InvalidInput(f"input '{name}': datatype {datatype!r} is not one of {', '.join(V2_TO_NUMPY)}")
    shape = _shape(name, doc.get("shape"))
    count = check_shape(name, shape, limits, counted)
    params = _parameters(f"input '{name}'", doc.get("parameters"))
    size = params.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
        if binary is None:
            raise InvalidInput(
                f"input '{name}' has binary_data_size but the request has no binary part "
                "(Inference-Header-Content-Length header missing)"
            )
        if offset + size > len(binary):
            raise InvalidInput(
                f"binary payload truncated: input '{name}' declares binary_data_size {size} "
                f"but only {len(binary) - offset} bytes remain"
            )
        data = decode_raw_tensor(name, datatype, shape, binary[offset : offset + size])
        return InputTensor(name, datatype, shape, data), offset + size, count
    if "data" not in doc:
        raise InvalidInput(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
    data = decode_json_tensor(name, datatype, shape, doc["data"], count)
    return InputTensor(name, datatype, shape, data), offset, count


def check_json_size(size: int, limits: RequestLimits) -> None:
    """PayloadTooLarge when a JSON part of `size` bytes is over the JSON limit."""
    if size > limits.max_json_bytes:
        raise PayloadTooLarge(
            f"the JSON part of the request ({size} bytes) exceeds the limit of {limits.max_json_bytes} "
            "bytes (MSERVE_MAX_JSON_BYTES); send large tensors in the binary extension"
        )


def decode_infer_request(
    body: bytes | bytearray, header_length: int | None, limits: RequestLimits
) -> InferenceRequest:
    """Decode a V2 REST infer body (JSON, or JSON + binary tensors) within `limits`."""
    check_json_size(len(body) if header_length is None else header_length, limits)
    view = memoryview(body)
    if header_length is None:
        doc, binary = _loads(body), None
    else:
        doc, binary = _loads(view[:header_length]), view[header_length:]
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object with an 'inputs' list")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"'id' must be a string, received {type(request_id).__name__}")
    inputs_doc = doc.get("inputs")
    if not isinstance(inputs_doc, list):
        raise InvalidInput("the request needs an 'inputs' list")
    inputs = []
    offset = counted = 0
    for item in inputs_doc:
        tensor, offset, count = _decode_input(item, binary, offset, limits, counted)
        counted += count
        inputs.append(tensor)
    if binary is not None and offset != len(binary):
        raise InvalidInput(
            f"the binary part has {len(binary)} bytes but the inputs' binary_data_size add up to {offset}"
        )
    outputs = None
    outputs_doc = doc.get("outputs")
    if outputs_doc is not None:
        if not isinstance(outputs_doc, list):
            raise InvalidInput("'outputs' must be a list")
        outputs = []
        for item in outputs_doc:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidInput(f"each requested output needs a 'name' string, received {item!s:.60}")
            oparams = _parameters(f"output '{item['name']}'", item.get("parameters"))
            binary_data = oparams.get("binary_data")
            if binary_data is not None and not isinstance(binary_data, bool):
                raise InvalidInput(f"output '{item['name']}': binary_data must be true or false")
            outputs.append(RequestedOutput(item["name"], binary_data, oparams))
    return InferenceRequest(request_id, inputs, _parameters("request", doc.get("parameters")), outputs)


def decode_infer_outputs(
    body: bytes | bytearray, header_length: int | None, limits: RequestLimits
) -> dict[str, np.ndarray]:
    """The output tensors of a V2 REST infer response (JSON, or JSON + binary), by name, within
    `limits` (the shadow comparison reads both answers with it); InvalidInput if malformed."""
    view = memoryview(body)
    header = view if header_length is None else view[:header_length]
    binary = None if header_length is None else view[header_length:]
    doc = _loads(header)
    entries = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise InvalidInput("the response has no 'outputs' list")
    outputs: dict[str, np.ndarray] = {}
    offset = counted = 0
    for item in entries:
        tensor, offset, count = _decode_input(item, binary, offset, limits, counted)
        counted += count
        outputs[tensor.name] = tensor.data
    return outputs


def _json_data(array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        return [
            item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)
            for item in array.reshape(-1)
        ]
    return np.ascontiguousarray(array).reshape(-1)


def encode_infer_response(response: InferenceResponse, request: InferenceRequest) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON part's length."""
    default_binary = request.parameters.get("binary_data_output") is True
    wanted = {o.name: o.binary_data for o in request.outputs} if request.outputs else {}
    outputs_doc: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for out in response.outputs:
        binary = wanted.get(out.name)
        if binary is None:
            binary = default_binary
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if binary:
            raw = encode_raw_tensor(out.data, out.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(out.data, out.datatype)
        outputs_doc.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs_doc
    header = orjson.dumps(doc, option=_NUMPY_JSON)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
