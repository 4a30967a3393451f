"""The REST route tables: V2 Open Inference Protocol and the V1 `:predict` convenience on the
serving port; health and /metrics on the admin port.

This table is the only list of routes: the dispatcher (rest_app.py) serves it and the
OpenAPI document is generated from it. Handlers parse and delegate to the DataPlane or
RestInference; every error is an MServeError mapped to a status code in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from mserve_runtime.dataplane import DataPlane
from mserve_runtime.rest_infer import RestInference
from mserve_runtime.rest_models import (
    ErrorBody,
    InferenceRequestBody,
    InferenceResponseBody,
    LiveBody,
    ModelMetadataBody,
    ModelReadyBody,
    ReadyBody,
    ServerMetadataBody,
    V1ModelStatus,
    V1PredictRequest,
    V1PredictResponse,
)

JSON = b"application/json"
BINARY = b"application/octet-stream"


@dataclass(slots=True)
class RestRequest:
    """What a handler sees: path parameters, lower-case headers, and the body (POST routes)."""

    params: dict[str, str]
    headers: dict[bytes, bytes]
    body: bytes | bytearray = b""
    scope: dict[str, Any] | None = None
    """The ASGI scope (path and query as received), for a handler that passes the request on."""


@dataclass(slots=True)
class RestResponse:
    body: bytes
    status: int = 200
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[RestRequest], Awaitable[RestResponse]]


@dataclass(frozen=True, slots=True)
class RestRoute:
    """One operation: how it is served and how the OpenAPI document describes it."""

    method: str
    path: str
    handler: Handler
    name: str
    tag: str
    responses: dict[int, type[BaseModel] | None]
    """Status code -> body model (None: not JSON, described by `response_type`)."""
    request_body: type[BaseModel] | None = None
    headers: tuple[dict[str, Any], ...] = ()
    """OpenAPI header parameters the route reads."""
    json_only: bool = True
    """Without an Inference-Header-Content-Length the whole body is JSON (its own size limit)."""
    response_type: str = "application/json"


def _json(doc: Any, status: int = 200) -> RestResponse:
    return RestResponse(orjson.dumps(doc), status)


_ERRORS: dict[int, type[BaseModel] | None] = {400: ErrorBody, 404: ErrorBody, 503: ErrorBody}
_TOO_LARGE: dict[int, type[BaseModel] | None] = {413: ErrorBody}
_HEADER_LENGTH = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "description": "Length of the JSON part when binary tensor data follows it.",
    "schema": {"type": "integer", "minimum": 0},
}


def _versioned(method: str, suffix: str, handler: Handler, name: str, **kwargs: Any) -> list[RestRoute]:
    """`/v2/models/{model_name}{suffix}` and its `/versions/{model_version}` form."""
    return [
        RestRoute(method, f"/v2/models/{{model_name}}{suffix}", handler, name, "v2", **kwargs),
        RestRoute(
            method,
            f"/v2/models/{{model_name}}/versions/{{model_version}}{suffix}",
            handler,
            f"{name}_versioned",
            "v2",
            **kwargs,
        ),
    ]


def build_routes(dataplane: DataPlane, inference: RestInference) -> list[RestRoute]:
    """Every REST route, the inference routes first (the dispatcher tries them in this order)."""

    async def infer(req: RestRequest) -> RestResponse:
        payload, json_length = await inference.v2_infer(
            req.body,
            req.params["model_name"],
            req.params.get("model_version"),
            _text(req.headers.get(b"inference-header-content-length")),
            _text(req.headers.get(b"content-encoding")),
        )
        if json_length is None:
            return RestResponse(payload)
        return RestResponse(
            payload, content_type=BINARY, headers=[(b"inference-header-content-length", b"%d" % json_length)]
        )

    async def predict(req: RestRequest) -> RestResponse:
        encoding = _text(req.headers.get(b"content-encoding"))
        return RestResponse(await inference.v1_predict(req.body, req.params["model_name"], encoding))

    async def server_live(req: RestRequest) -> RestResponse:
        return _json({"live": dataplane.live()})

    async def server_ready(req: RestRequest) -> RestResponse:
        ready = dataplane.ready()
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(req: RestRequest) -> RestResponse:
        return _json(dataplane.server_metadata().to_dict())

    async def model_metadata(req: RestRequest) -> RestResponse:
        meta = dataplane.model_metadata(req.params["model_name"], req.params.get("model_version"))
        return _json(meta.to_dict())

    async def model_ready(req: RestRequest) -> RestResponse:
        name = req.params["model_name"]
        ready = dataplane.model_ready(name, req.params.get("model_version"))
        return _json({"name": name, "ready": ready}, 200 if ready else 503)

    async def v1_model_status(req: RestRequest) -> RestResponse:
        name = req.params["model_name"]
        return _json({"name": name, "ready": dataplane.model_ready(name)})

    return [
        *_versioned(
            "POST",
            "/infer",
            infer,
            "infer",
            responses={200: InferenceResponseBody, **_ERRORS, **_TOO_LARGE},
            request_body=InferenceRequestBody,
            headers=(_HEADER_LENGTH,),
            json_only=False,
        ),
        RestRoute(
            "POST",
            "/v1/models/{model_name}:predict",
            predict,
            "predict",
            "v1",
            {200: V1PredictResponse, **_ERRORS, **_TOO_LARGE},
            request_body=V1PredictRequest,
        ),
        RestRoute("GET", "/v2/health/live", server_live, "server_live", "v2", {200: LiveBody}),
        RestRoute(
            "GET", "/v2/health/ready", server_ready, "server_ready", "v2", {200: ReadyBody, 503: ReadyBody}
        ),
        RestRoute("GET", "/v2", server_metadata, "server_metadata", "v2", {200: ServerMetadataBody}),
        *_versioned(
            "GET", "", model_metadata, "model_metadata", responses={200: ModelMetadataBody, **_ERRORS}
        ),
        *_versioned("GET", "/ready", model_ready, "model_ready", responses={200: ModelReadyBody, **_ERRORS}),
        RestRoute(
            "GET",
            "/v1/models/{model_name}",
            v1_model_status,
            "v1_model_status",
            "v1",
            {200: V1ModelStatus, **_ERRORS},
        ),
    ]


HEALTH_ROUTES = frozenset({"server_live", "server_ready"})


def build_admin_routes(dataplane: DataPlane, serving: list[RestRoute]) -> list[RestRoute]:
    """The admin port's routes: the health routes of `serving` and /metrics."""

    async def metrics(req: RestRequest) -> RestResponse:
        body = generate_latest(dataplane.metrics.registry)
        return RestResponse(body, content_type=CONTENT_TYPE_LATEST.encode())

    return [
        *(route for route in serving if route.name in HEALTH_ROUTES),
        RestRoute(
            "GET",
            "/metrics",
            metrics,
            "metrics",
            "observability",
            {200: None},
            response_type=CONTENT_TYPE_LATEST,
        ),
    ]


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1").strip().lower()
