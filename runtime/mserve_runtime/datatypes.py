"""Datatype names of the V2 protocol, numpy and ONNX, mapped in one place.

BF16 has no numpy dtype, so it is not served.
"""

from __future__ import annotations

import numpy as np

from mserve_runtime.errors import InvalidInput

V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

# Little-endian dtypes for reading binary tensor data off the wire.
V2_TO_WIRE_NUMPY: dict[str, np.dtype] = {
    name: (dtype.newbyteorder("<") if dtype.kind in "iuf" else dtype) for name, dtype in V2_TO_NUMPY.items()
}

NUMPY_TO_V2: dict[np.dtype, str] = {dtype: name for name, dtype in V2_TO_NUMPY.items()}
# numpy string arrays are BYTES too.
_STRING_KINDS = "OSU"

# onnxruntime reports types as "tensor(<onnx name>)".
ONNX_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

V2_TO_ONNX: dict[str, str] = {v2: onnx for onnx, v2 in ONNX_TO_V2.items()}


def v2_to_numpy(datatype: str) -> np.dtype:
    """The numpy dtype of a V2 datatype name; InvalidInput for names we do not serve."""
    try:
        return V2_TO_NUMPY[datatype]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unsupported datatype {datatype!r}; expected one of {', '.join(V2_TO_NUMPY)}"
        ) from None


def numpy_to_v2(dtype: np.dtype) -> str:
    """The V2 datatype name of a numpy dtype (string arrays are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in _STRING_KINDS:
        return "BYTES"
    name = NUMPY_TO_V2.get(dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype)
    if name is None:
        raise InvalidInput(f"numpy dtype {dtype} has no V2 datatype")
    return name


def onnx_to_v2(onnx_type: str) -> str:
    """The V2 datatype name of an onnxruntime type string such as `tensor(float)`."""
    try:
        return ONNX_TO_V2[onnx_type]
    except KeyError:
        raise ValueError(f"onnx type {onnx_type} cannot be served over the V2 protocol") from None


def element_size(datatype: str) -> int:
    """Bytes per element on the wire; BYTES has no fixed size (0)."""
    if datatype == "BYTES":
        return 0
    return V2_TO_NUMPY[datatype].itemsize
