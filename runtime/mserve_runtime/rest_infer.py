"""The REST inference handlers (V2 infer, V1 predict) on bytes in, bytes out.

They do not depend on the web framework: the route table (rest_routes.py) calls them.
Large bodies are decoded and their answers encoded on one side thread, one at a time:
the event loop keeps answering probes meanwhile, and only one request at a time pays
a large decode's memory (JSON costs many times its size as Python objects).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import orjson

from mserve_runtime.dataplane import DataPlane
from mserve_runtime.datatypes import v2_to_numpy
from mserve_runtime.errors import InvalidInput, MServeError
from mserve_runtime.inference_types import InferenceRequest, InputTensor, OutputTensor
from mserve_runtime.request_limits import MAX_RANK, RequestLimits, check_shape
from mserve_runtime.rest_body import undo_content_encoding
from mserve_runtime.rest_codec import (
    check_json_size,
    decode_infer_request,
    decode_json_tensor,
    encode_infer_response,
    parse_header_length,
)

# Bodies above this size are decoded off the event loop (below it the thread hop costs more).
OFF_LOOP_BYTES = 256 << 10
T = TypeVar("T")


def _predictions(outputs: list[OutputTensor]) -> list[Any]:
    def plain(a: np.ndarray) -> Any:
        if a.dtype != object:
            return a.tolist()
        return [x.decode() if isinstance(x, bytes) else x for x in a.tolist()]

    if len(outputs) == 1:
        return plain(outputs[0].data)
    rows = outputs[0].data.shape[0] if outputs[0].data.ndim else 1
    return [{o.name: plain(o.data[i : i + 1])[0] for o in outputs} for i in range(rows)]


class RestInference:
    """V2 `infer` (JSON + binary extension) and V1 `:predict`, with request metrics."""

    def __init__(self, dataplane: DataPlane, limits: RequestLimits) -> None:
        self.dataplane = dataplane
        self.limits = limits
        self.metrics = dataplane.metrics
        self._large = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mserve-decode")

    async def _work(self, size: int, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, on the side thread when `size` bytes make it slow."""
        if size < OFF_LOOP_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._large, fn, *args)

    def _content(self, body: bytes | bytearray, encoding: str | None) -> bytes | bytearray:
        return undo_content_encoding(
            body, encoding, self.limits.max_request_bytes, "MSERVE_MAX_REQUEST_BYTES"
        )

    def _observe(self, model_name: str, protocol: str, status: str, started: float) -> None:
        # RuntimeMetrics counts a name it does not serve as `_unknown`.
        self.metrics.observe_request(model_name, protocol, status, time.perf_counter() - started)

    async def v2_infer(
        self,
        body: bytes | bytearray,
        model_name: str,
        model_version: str | None = None,
        header_length: str | None = None,
        encoding: str | None = None,
    ) -> tuple[bytes, int | None]:
        """The response body and, when any output is binary, its JSON part's length."""
        started = time.perf_counter()
        status = "500"
        try:
            body = self._content(body, encoding)
            json_length = parse_header_length(header_length, len(body))
            request = await self._work(len(body), decode_infer_request, body, json_length, self.limits)
            result = await self.dataplane.infer(model_name, request, model_version)
            reply = await self._work(len(body), encode_infer_response, result, request)
            status = "200"
            return reply
        except MServeError as exc:
            status = str(exc.status_code)
            raise
        finally:
            self._observe(model_name, "rest", status, started)

    async def v1_predict(
        self, body: bytes | bytearray, model_name: str, encoding: str | None = None
    ) -> bytes:
        """`{"instances": [...]}` in, `{"predictions": [...]}` out, for single-input models."""
        started = time.perf_counter()
        status = "500"
        try:
            reply = await self._v1_predict(self._content(body, encoding), model_name)
            status = "200"
            return reply
        except MServeError as exc:
            status = str(exc.status_code)
            raise
        finally:
            self._observe(model_name, "rest_v1", status, started)

    async def _v1_predict(self, body: bytes | bytearray, model_name: str) -> bytes:
        check_json_size(len(body), self.limits)
        meta = self.dataplane.model_metadata(model_name)
        if len(meta.inputs) != 1:
            raise InvalidInput(
                f"V1 :predict needs a single-input model; '{model_name}' has inputs "
                f"{', '.join(t.name for t in meta.inputs)}: use /v2/models/{model_name}/infer"
            )
        spec = meta.inputs[0]
        tensor = await self._work(len(body), self._v1_tensor, body, spec.name, spec.datatype)
        result = await self.dataplane.infer(model_name, InferenceRequest(None, [tensor]))
        return orjson.dumps({"predictions": _predictions(result.outputs)}, option=orjson.OPT_SERIALIZE_NUMPY)

    def _v1_tensor(self, body: bytes | bytearray, name: str, datatype: str) -> InputTensor:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"malformed JSON in the request body: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
            raise InvalidInput('the request body must be {"instances": [...]}')
        instances = doc["instances"]
        v2_to_numpy(datatype)
        shape = _instances_shape(name, instances)
        count = check_shape(name, shape, self.limits)
        array = decode_json_tensor(name, datatype, shape, instances, count)
        return InputTensor(name, datatype, shape, array)


def _instances_shape(name: str, instances: list[Any]) -> list[int]:
    """The shape of V1 `instances`, read along the first element at each level (bounded depth)."""
    shape = []
    level: Any = instances
    while isinstance(level, list):
        if len(shape) == MAX_RANK:
            raise InvalidInput(f"input '{name}': instances are nested deeper than {MAX_RANK} levels")
        shape.append(len(level))
        level = level[0] if level else None
    return shape
