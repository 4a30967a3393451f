"""REST adapters: V2 Open Inference Protocol routes, the V1 `:predict` convenience, /metrics.

Handlers parse and delegate to the DataPlane; every error is an MServeError that one
exception handler (server.py) turns into a status code.
"""

from __future__ import annotations

import gzip
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mserve_runtime.dataplane import DataPlane
from mserve_runtime.datatypes import v2_to_numpy
from mserve_runtime.errors import InvalidInput, MServeError, PayloadTooLarge
from mserve_runtime.inference_types import InferenceRequest, InputTensor, OutputTensor
from mserve_runtime.rest_codec import (
    HEADER_LENGTH,
    decode_infer_request,
    decode_json_tensor,
    encode_infer_response,
)
from mserve_runtime.rest_codec import parse_header_length as _parse_header_length
from mserve_runtime.rest_models import (
    ErrorBody,
    InferenceResponseBody,
    LiveBody,
    ModelMetadataBody,
    ModelReadyBody,
    ReadyBody,
    ServerMetadataBody,
    V1ModelStatus,
    V1PredictResponse,
)

JSON = "application/json"
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Invalid input"},
    404: {"model": ErrorBody, "description": "Model not found"},
    503: {"model": ErrorBody, "description": "Model not ready"},
}


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON)


def _infer_openapi(with_header: bool) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/InferenceRequestBody"}}},
        }
    }
    if with_header:
        extra["parameters"] = [
            {
                "name": "Inference-Header-Content-Length",
                "in": "header",
                "required": False,
                "description": "Length of the JSON part when binary tensor data follows it.",
                "schema": {"type": "integer", "minimum": 0},
            }
        ]
    return extra


class _BodyReader:
    """Reads a request body, undoing Content-Encoding (tritonclient can gzip/deflate requests)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def read(self, request: Request) -> bytes:
        body = await request.body()
        encoding = request.headers.get("content-encoding")
        if not encoding or encoding == "identity":
            return body
        try:
            if encoding == "gzip":
                decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            elif encoding == "deflate":
                decompressor = zlib.decompressobj()
            else:
                raise InvalidInput(f"unsupported Content-Encoding {encoding!r} (use gzip or deflate)")
            out = decompressor.decompress(body, self.limit + 1)
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise InvalidInput(f"cannot decompress the {encoding} request body: {exc}") from None
        if len(out) > self.limit:
            raise PayloadTooLarge(
                f"decompressed request body exceeds the limit of {self.limit} bytes "
                "(MSERVE_MAX_REQUEST_BYTES)"
            )
        return out


def _add_model_routes(
    router: APIRouter, suffix: str, endpoint: Callable[..., Any], methods: list[str], **kwargs: Any
) -> None:
    """Register `/v2/models/{model_name}{suffix}` and its `/versions/{model_version}` form."""
    router.add_api_route(f"/v2/models/{{model_name}}{suffix}", endpoint, methods=methods, **kwargs)
    router.add_api_route(
        f"/v2/models/{{model_name}}/versions/{{model_version}}{suffix}",
        endpoint,
        methods=methods,
        **{**kwargs, "name": f"{kwargs.get('name', endpoint.__name__)}_versioned"},
    )


def build_v2_router(dataplane: DataPlane, max_request_bytes: int) -> APIRouter:
    """The V2 REST protocol, plus Triton's binary tensor extension on infer."""
    router = APIRouter(tags=["v2"])
    metrics = dataplane.metrics
    served = dataplane.settings.model_name
    reader = _BodyReader(max_request_bytes)

    async def server_live() -> Response:
        return json_response({"live": dataplane.live()})

    async def server_ready() -> Response:
        ready = dataplane.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata() -> Response:
        return json_response(dataplane.server_metadata().to_dict())

    async def model_metadata(model_name: str, model_version: str | None = None) -> Response:
        return json_response(dataplane.model_metadata(model_name, model_version).to_dict())

    async def model_ready(model_name: str, model_version: str | None = None) -> Response:
        ready = dataplane.model_ready(model_name, model_version)
        return json_response({"name": model_name, "ready": ready}, 200 if ready else 503)

    async def infer(request: Request, model_name: str, model_version: str | None = None) -> Response:
        started = time.perf_counter()
        status = "500"
        try:
            body = await reader.read(request)
            header_length = _parse_header_length(request.headers.get(HEADER_LENGTH), len(body))
            infer_request = decode_infer_request(body, header_length)
            result = await dataplane.infer(model_name, infer_request, model_version)
            payload, json_length = encode_infer_response(result, infer_request)
            status = "200"
        except MServeError as exc:
            status = str(exc.status_code)
            raise
        finally:
            label = model_name if model_name == served else "_unknown"
            metrics.observe_request(label, "rest", status, time.perf_counter() - started)
        if json_length is None:
            return Response(payload, media_type=JSON)
        return Response(
            payload,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_length)},
        )

    router.add_api_route(
        "/v2/health/live", server_live, methods=["GET"], responses={200: {"model": LiveBody}}
    )
    router.add_api_route(
        "/v2/health/ready",
        server_ready,
        methods=["GET"],
        responses={200: {"model": ReadyBody}, 503: {"model": ReadyBody}},
    )
    router.add_api_route(
        "/v2", server_metadata, methods=["GET"], responses={200: {"model": ServerMetadataBody}}
    )
    _add_model_routes(
        router, "", model_metadata, ["GET"], responses={200: {"model": ModelMetadataBody}, **_ERRORS}
    )
    _add_model_routes(
        router, "/ready", model_ready, ["GET"], responses={200: {"model": ModelReadyBody}, **_ERRORS}
    )
    _add_model_routes(
        router,
        "/infer",
        infer,
        ["POST"],
        responses={200: {"model": InferenceResponseBody}, 413: {"model": ErrorBody}, **_ERRORS},
        openapi_extra=_infer_openapi(with_header=True),
    )
    return router


def _predictions(outputs: list[OutputTensor]) -> list[Any]:
    names, arrays = [o.name for o in outputs], [o.data for o in outputs]

    def plain(a: np.ndarray) -> Any:
        return (
            [x.decode() if isinstance(x, bytes) else x for x in a.tolist()]
            if a.dtype == object
            else a.tolist()
        )

    if len(arrays) == 1:
        return plain(arrays[0])
    rows = arrays[0].shape[0] if arrays[0].ndim else 1
    return [{n: plain(a[i : i + 1])[0] for n, a in zip(names, arrays, strict=True)} for i in range(rows)]


def build_v1_router(dataplane: DataPlane, max_request_bytes: int) -> APIRouter:
    """`POST /v1/models/{name}:predict` with `{"instances": [...]}` for single-input models."""
    router = APIRouter(tags=["v1"])
    metrics = dataplane.metrics
    served = dataplane.settings.model_name
    reader = _BodyReader(max_request_bytes)

    async def model_status(model_name: str) -> Response:
        return json_response({"name": model_name, "ready": dataplane.model_ready(model_name)})

    async def predict(request: Request, model_name: str) -> Response:
        started = time.perf_counter()
        status = "500"
        try:
            body = await reader.read(request)
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"malformed JSON in the request body: {exc}") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
                raise InvalidInput('the request body must be {"instances": [...]}')
            meta = dataplane.model_metadata(model_name)
            if len(meta.inputs) != 1:
                raise InvalidInput(
                    f"V1 :predict needs a single-input model; '{model_name}' has inputs "
                    f"{', '.join(t.name for t in meta.inputs)}: use /v2/models/{model_name}/infer"
                )
            spec = meta.inputs[0]
            instances = doc["instances"]
            if spec.datatype == "BYTES":
                try:
                    shape = list(np.asarray(instances, dtype=object).shape)
                except ValueError as exc:
                    raise InvalidInput(f"input '{spec.name}': instances are ragged: {exc}") from None
                array = decode_json_tensor(spec.name, "BYTES", shape, instances)
            else:
                try:
                    array = np.asarray(instances, dtype=v2_to_numpy(spec.datatype))
                except (ValueError, TypeError, OverflowError) as exc:
                    raise InvalidInput(
                        f"input '{spec.name}': instances do not form a {spec.datatype} tensor: {exc}"
                    ) from None
            tensor = InputTensor(spec.name, spec.datatype, list(array.shape), array)
            result = await dataplane.infer(model_name, InferenceRequest(None, [tensor]))
            payload = orjson.dumps(
                {"predictions": _predictions(result.outputs)},
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            status = "200"
        except MServeError as exc:
            status = str(exc.status_code)
            raise
        finally:
            label = model_name if model_name == served else "_unknown"
            metrics.observe_request(label, "rest_v1", status, time.perf_counter() - started)
        return Response(payload, media_type=JSON)

    router.add_api_route(
        "/v1/models/{model_name}",
        model_status,
        methods=["GET"],
        responses={200: {"model": V1ModelStatus}, **_ERRORS},
    )
    router.add_api_route(
        "/v1/models/{model_name}:predict",
        predict,
        methods=["POST"],
        responses={200: {"model": V1PredictResponse}, 413: {"model": ErrorBody}, **_ERRORS},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/V1PredictRequest"}}},
            }
        },
    )
    return router


def build_metrics_router(dataplane: DataPlane) -> APIRouter:
    router = APIRouter(tags=["observability"])

    async def metrics() -> Response:
        return Response(generate_latest(dataplane.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    router.add_api_route("/metrics", metrics, methods=["GET"], response_class=Response)
    return router
