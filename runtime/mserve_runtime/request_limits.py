"""Per-request limits derived from the pod's memory, and the shape checks that enforce them.

Every check here runs on the wire's numbers and lists, before numpy allocates anything,
so that no request can make the process allocate more than its limits allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mserve_runtime.errors import InvalidInput
from mserve_runtime.memory_limit import available_memory

MAX_RANK = 64
"""numpy's own maximum number of dimensions; a deeper shape could never become an array."""

# One request may use this share of the pod's memory while it is decoded and run.
REQUEST_SHARE = 4
# Peak memory per byte of body, measured by benchmarks/request_memory.py (docs/runtime.md):
# JSON numbers and strings become Python objects (x10 to x20), binary tensors are views.
JSON_COST_PER_BYTE = 16
BINARY_COST_PER_BYTE = 2
# Bytes per element once decoded, at worst: a BYTES element is a Python str and a pointer.
ELEMENT_COST = 64
# Derivation only ever lowers today's default; settings raise it explicitly.
BODY_CAP = 64 << 20


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one request may carry; each larger request is refused before it is decoded."""

    max_request_bytes: int
    """The whole body (JSON part plus binary tensors), after Content-Encoding is undone."""
    max_json_bytes: int
    """The JSON part of a body (all of it without the binary extension)."""
    max_elements: int
    """Tensor elements across all inputs of one request."""

    @classmethod
    def derive(cls, memory_bytes: int) -> RequestLimits:
        """The limits for a process allowed `memory_bytes` of memory."""
        budget = max(memory_bytes // REQUEST_SHARE, 1 << 20)
        body = min(budget // BINARY_COST_PER_BYTE, BODY_CAP)
        return cls(
            max_request_bytes=body,
            max_json_bytes=min(budget // JSON_COST_PER_BYTE, body),
            max_elements=budget // ELEMENT_COST,
        )

    @classmethod
    def from_settings(cls, settings: Any, cgroup_root: Path = Path("/sys/fs/cgroup")) -> RequestLimits:
        """Derived from `memory_limit_bytes` (or the cgroup's), each `max_*` setting winning when set."""
        derived = cls.derive(settings.memory_limit_bytes or available_memory(cgroup_root))
        body = settings.max_request_bytes or derived.max_request_bytes
        return cls(
            max_request_bytes=body,
            max_json_bytes=min(settings.max_json_bytes or derived.max_json_bytes, body),
            max_elements=settings.max_elements or derived.max_elements,
        )


def check_shape(name: str, shape: list[int], limits: RequestLimits, counted: int = 0) -> int:
    """The element count of `shape`; InvalidInput naming the input for any shape numpy must not see.

    `counted` is how many elements the request's earlier inputs hold (the limit is per request).
    Dimensions that are zero still must not multiply past the limit: numpy sizes an empty
    array's other dimensions too, and refuses (or overflows) on a huge product.
    """
    if len(shape) > MAX_RANK:
        raise InvalidInput(
            f"input '{name}': shape has {len(shape)} dimensions, at most {MAX_RANK} are allowed"
        )
    room = limits.max_elements - counted
    product = 1
    for dim in shape:
        if dim < 0:
            raise InvalidInput(f"input '{name}': shape must hold non-negative dimensions, received {shape}")
        if dim:
            product *= dim
            if product > room:
                raise InvalidInput(
                    f"input '{name}': shape {shape!s:.200} holds more than {room} elements, the rest of "
                    f"this request's limit of {limits.max_elements} (MSERVE_MAX_ELEMENTS)"
                )
    return 0 if 0 in shape else product


def flatten_json_data(name: str, data: Any, rank: int) -> list[Any]:
    """Row-major elements of JSON `data`, flat or nested, never nested deeper than the shape's rank.

    Level by level rather than recursively: a deep nesting is refused, never a RecursionError.
    """
    if not isinstance(data, list):
        return [data]
    level = data
    depth = 1
    while level and type(level[0]) is list:
        if depth >= max(rank, 1):
            raise InvalidInput(f"input '{name}': data is nested deeper than the shape's {rank} dimensions")
        if not all(type(item) is list for item in level) or len(set(map(len, level))) != 1:
            raise InvalidInput(
                f"input '{name}': nested data must be a regular array (equal lengths per level)"
            )
        flat: list[Any] = []
        for item in level:
            flat.extend(item)
        level = flat
        depth += 1
    return level
