"""Raw tensor bytes as the V2 binary extension and gRPC `raw_*_contents` carry them.

Little-endian, row-major, no padding; BOOL is one byte; each BYTES element is a 4-byte
little-endian length followed by its bytes.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from mserve_runtime.datatypes import V2_TO_WIRE_NUMPY, v2_to_numpy
from mserve_runtime.errors import InvalidInput

_LENGTH = struct.Struct("<I")


def _decode_bytes_elements(name: str, buffer: memoryview, count: int) -> np.ndarray:
    # A list grown element by element (not np.empty(count)): a huge declared shape must not
    # make us allocate before the bytes prove the elements exist.
    items: list[str] = []
    offset, end = 0, len(buffer)
    for i in range(count):
        if offset + 4 > end:
            raise InvalidInput(
                f"input '{name}': BYTES data ends after {i} of {count} elements (truncated length prefix)"
            )
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(
                f"input '{name}': BYTES element {i} declares {length} bytes but only {end - offset} remain"
            )
        try:
            # onnxruntime string tensors hold text: bytes would reach the model as "b'...'".
            items.append(str(buffer[offset : offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(
                f"input '{name}': BYTES element {i} is not UTF-8 text (onnxruntime string tensors hold text)"
            ) from None
        offset += length
    if offset != end:
        raise InvalidInput(f"input '{name}': {end - offset} bytes left over after {count} BYTES elements")
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def decode_raw_tensor(name: str, datatype: str, shape: list[int], buffer: bytes | memoryview) -> np.ndarray:
    """A numpy view (no copy for fixed-size types) of one tensor's raw bytes, shaped to `shape`."""
    v2_to_numpy(datatype)  # InvalidInput for unknown datatypes
    count = math.prod(shape)
    view = memoryview(buffer)
    if datatype == "BYTES":
        return _decode_bytes_elements(name, view, count).reshape(shape)
    dtype = V2_TO_WIRE_NUMPY[datatype]
    expected = count * dtype.itemsize
    if len(view) != expected:
        raise InvalidInput(
            f"input '{name}': shape {shape} of {datatype} needs {expected} bytes, received {len(view)}"
        )
    array = np.frombuffer(view, dtype=dtype, count=count).reshape(shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    return array


def encode_raw_tensor(array: np.ndarray, datatype: str) -> bytes | memoryview:
    """The raw bytes of `array` (a view when it is already contiguous little-endian)."""
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    wire = V2_TO_WIRE_NUMPY[datatype]
    array = np.ascontiguousarray(array, dtype=wire)
    return memoryview(array).cast("B")
