"""The REST inference handlers (V2 infer, V1 predict) on bytes in, bytes out.

They do not depend on the web framework: the FastAPI routes (rest_routes.py) and the pure
ASGI fast path (asgi_fast_path.py) both call them, so the two can never disagree.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import numpy as np
import orjson

from mserve_runtime.dataplane import DataPlane
from mserve_runtime.datatypes import v2_to_numpy
from mserve_runtime.errors import InvalidInput, MServeError, PayloadTooLarge
from mserve_runtime.inference_types import InferenceRequest, InputTensor, OutputTensor
from mserve_runtime.rest_codec import (
    decode_infer_request,
    decode_json_tensor,
    encode_infer_response,
    parse_header_length,
)


def error_body(exc: MServeError) -> bytes:
    """The V2 error document: `{"error": "<message>"}`."""
    return orjson.dumps({"error": exc.message})


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

    def __init__(self, dataplane: DataPlane, max_request_bytes: int) -> None:
        self.dataplane = dataplane
        self.limit = max_request_bytes
        self.served = dataplane.settings.model_name
        self.metrics = dataplane.metrics

    def decode_content(self, body: bytes, encoding: str | None) -> bytes:
        """Undo Content-Encoding (tritonclient can gzip or deflate requests), within the size limit."""
        if not encoding or encoding == "identity":
            return body
        if encoding == "gzip":
            decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            decompressor = zlib.decompressobj()
        else:
            raise InvalidInput(f"unsupported Content-Encoding {encoding!r} (use gzip or deflate)")
        try:
            out = decompressor.decompress(body, self.limit + 1)
        except zlib.error as exc:
            raise InvalidInput(f"cannot decompress the {encoding} request body: {exc}") from None
        if len(out) > self.limit:
            raise PayloadTooLarge(
                f"decompressed request body exceeds the limit of {self.limit} bytes "
                "(MSERVE_MAX_REQUEST_BYTES)"
            )
        return out

    def _observe(self, model_name: str, protocol: str, status: str, started: float) -> None:
        label = model_name if model_name == self.served else "_unknown"
        self.metrics.observe_request(label, protocol, status, time.perf_counter() - started)

    async def v2_infer(
        self,
        body: bytes,
        model_name: str,
        model_version: str | None = None,
        header_length: str | None = None,
        encoding: str | None = None,
    ) -> tuple[bytes, int | None]:
        """The response body and, when any output is binary, its JSON part's length."""
        started = time.perf_counter()
        status = "500"
        try:
            body = self.decode_content(body, encoding)
            request = decode_infer_request(body, parse_header_length(header_length, len(body)))
            result = await self.dataplane.infer(model_name, request, model_version)
            reply = encode_infer_response(result, request)
            status = "200"
            return reply
        except MServeError as exc:
            status = str(exc.status_code)
            raise
        finally:
            self._observe(model_name, "rest", status, started)

    async def v1_predict(self, body: bytes, model_name: str, encoding: str | None = None) -> bytes:
        """`{"instances": [...]}` in, `{"predictions": [...]}` out, for single-input models."""
        started = time.perf_counter()
        status = "500"
        try:
            reply = await self._v1_predict(self.decode_content(body, encoding), model_name)
            status = "200"
            return reply
        except MServeError as exc:
            status = str(exc.status_code)
            raise
        finally:
            self._observe(model_name, "rest_v1", status, started)

    async def _v1_predict(self, body: bytes, model_name: str) -> bytes:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"malformed JSON in the request body: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
            raise InvalidInput('the request body must be {"instances": [...]}')
        meta = self.dataplane.model_metadata(model_name)
        if len(meta.inputs) != 1:
            raise InvalidInput(
                f"V1 :predict needs a single-input model; '{model_name}' has inputs "
                f"{', '.join(t.name for t in meta.inputs)}: use /v2/models/{model_name}/infer"
            )
        spec = meta.inputs[0]
        instances = doc["instances"]
        try:
            if spec.datatype == "BYTES":
                shape = list(np.asarray(instances, dtype=object).shape)
                array = decode_json_tensor(spec.name, "BYTES", shape, instances)
            else:
                array = np.asarray(instances, dtype=v2_to_numpy(spec.datatype))
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(
                f"input '{spec.name}': instances do not form a {spec.datatype} tensor: {exc}"
            ) from None
        tensor = InputTensor(spec.name, spec.datatype, list(array.shape), array)
        result = await self.dataplane.infer(model_name, InferenceRequest(None, [tensor]))
        return orjson.dumps({"predictions": _predictions(result.outputs)}, option=orjson.OPT_SERIALIZE_NUMPY)
