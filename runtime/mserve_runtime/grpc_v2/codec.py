"""Protobuf messages of the V2 gRPC protocol to and from the runtime's inference types.

Inputs come either as typed `contents` (fp32_contents, int64_contents, ...) or as
`raw_input_contents` (Triton's layout, see `raw_tensors`); outputs go back raw when the
request was raw or when a datatype has no typed field (FP16), typed otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mserve_runtime.datatypes import v2_to_numpy
from mserve_runtime.errors import InvalidInput
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb
from mserve_runtime.inference_types import (
    InferenceRequest,
    InferenceResponse,
    InputTensor,
    ModelMetadata,
    RequestedOutput,
    ServerMetadata,
)
from mserve_runtime.raw_tensors import decode_raw_tensor, encode_raw_tensor
from mserve_runtime.request_limits import RequestLimits, check_shape

# The InferTensorContents field that carries each datatype; FP16 has none (raw only).
TYPED_FIELD: dict[str, str] = {
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
# Fields wider than the datatype: values must be range-checked, or numpy would wrap them.
_NARROWED = {"INT8", "INT16", "UINT8", "UINT16"}


def parameters_from_pb(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    decoded: dict[str, Any] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        decoded[key] = getattr(param, choice) if choice is not None else None
    return decoded


def parameters_to_pb(params: Mapping[str, Any], target: Any) -> None:
    """Fill a protobuf `map<string, InferParameter>` from plain values."""
    for key, value in params.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int) and value >= 1 << 63:
            param.uint64_param = value
        elif isinstance(value, int):
            param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


def _has_typed_contents(tensor: pb.ModelInferRequest.InferInputTensor) -> bool:
    return bool(tensor.contents.ListFields())


def _decode_typed(tensor: pb.ModelInferRequest.InferInputTensor, shape: list[int], count: int) -> np.ndarray:
    name, datatype = tensor.name, tensor.datatype
    dtype = v2_to_numpy(datatype)
    field = TYPED_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(
            f"input '{name}': {datatype} has no typed contents field; send it in raw_input_contents"
        )
    others = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if others:
        raise InvalidInput(
            f"input '{name}': datatype {datatype} goes in contents.{field}, received {', '.join(others)}"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': shape {shape} needs {count} {datatype} elements in contents.{field}, "
            f"received {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        try:
            # onnxruntime string tensors hold text, as in raw_tensors.
            array[:] = [value.decode("utf-8") for value in values]
        except UnicodeDecodeError:
            raise InvalidInput(f"input '{name}': a BYTES element is not UTF-8 text") from None
        return array.reshape(shape)
    if datatype in _NARROWED:
        wide = np.asarray(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInput(
                f"input '{name}': {datatype} values must lie in [{info.min}, {info.max}], "
                f"received [{wide.min()}, {wide.max()}]"
            )
        return wide.astype(dtype).reshape(shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


def decode_infer_request(message: pb.ModelInferRequest, limits: RequestLimits) -> InferenceRequest:
    """A ModelInferRequest as an InferenceRequest; InvalidInput naming the tensor if malformed.

    Shapes are checked against `limits` before any tensor is built.
    """
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs; "
            "it needs one entry per input, in the order of `inputs`"
        )
    inputs = []
    counted = 0
    for index, tensor in enumerate(message.inputs):
        name = tensor.name
        if "shared_memory_region" in tensor.parameters:
            raise InvalidInput(f"input '{name}': shared memory inputs are not supported by this server")
        shape = list(tensor.shape)
        count = check_shape(name, shape, limits, counted)
        counted += count
        if raw:
            if _has_typed_contents(tensor):
                raise InvalidInput(f"input '{name}': contents must be empty when raw_input_contents is used")
            data = decode_raw_tensor(name, tensor.datatype, shape, raw[index])
        else:
            data = _decode_typed(tensor, shape, count)
        inputs.append(InputTensor(name, tensor.datatype, shape, data))
    outputs = None
    if message.outputs:
        outputs = [
            RequestedOutput(name=o.name, parameters=parameters_from_pb(o.parameters)) for o in message.outputs
        ]
    return InferenceRequest(
        id=message.id or None,
        inputs=inputs,
        parameters=parameters_from_pb(message.parameters),
        outputs=outputs,
    )


def answers_raw(message: pb.ModelInferRequest, response: InferenceResponse) -> bool:
    """Raw outputs unless the request used typed contents and every output has a typed field."""
    if message.raw_input_contents or not message.inputs:
        return True
    return any(output.datatype not in TYPED_FIELD for output in response.outputs)


def _typed_values(array: np.ndarray, datatype: str) -> list[Any]:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [item if isinstance(item, bytes) else str(item).encode("utf-8") for item in flat]
    return flat.tolist()


def encode_infer_response(response: InferenceResponse, *, raw: bool) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    parameters_to_pb(response.parameters, message.parameters)
    for output in response.outputs:
        tensor = message.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        if raw:
            message.raw_output_contents.append(bytes(encode_raw_tensor(output.data, output.datatype)))
        else:
            getattr(tensor.contents, TYPED_FIELD[output.datatype]).extend(
                _typed_values(output.data, output.datatype)
            )
    return message


def encode_server_metadata(metadata: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name=metadata.name, version=metadata.version, extensions=list(metadata.extensions)
    )


def encode_model_metadata(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=list(metadata.versions),
        platform=metadata.platform,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.outputs],
    )
