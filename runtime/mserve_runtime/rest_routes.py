"""REST adapters: V2 Open Inference Protocol routes, the V1 `:predict` convenience, /metrics.

Handlers parse and delegate to the DataPlane; every error is an MServeError that one
exception handler (server.py) turns into a status code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mserve_runtime.dataplane import DataPlane
from mserve_runtime.rest_codec import HEADER_LENGTH
from mserve_runtime.rest_infer import RestInference
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


def _add_model_routes(
    router: APIRouter, suffix: str, endpoint: Callable[..., Any], methods: list[str], **kwargs: Any
) -> None:
    """Register `/v2/models/{model_name}{suffix}` and its `/versions/{model_version}` form."""

    async def unversioned(**params: Any) -> Any:
        return await endpoint(**params)

    # Without this, FastAPI would read `model_version` from the query string of the plain route.
    signature = inspect.signature(endpoint)
    unversioned.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name != "model_version"]
    )
    router.add_api_route(
        f"/v2/models/{{model_name}}{suffix}",
        unversioned,
        methods=methods,
        **{**kwargs, "name": kwargs.get("name", endpoint.__name__)},
    )
    router.add_api_route(
        f"/v2/models/{{model_name}}/versions/{{model_version}}{suffix}",
        endpoint,
        methods=methods,
        **{**kwargs, "name": f"{kwargs.get('name', endpoint.__name__)}_versioned"},
    )


def build_v2_router(dataplane: DataPlane, handlers: RestInference) -> APIRouter:
    """The V2 REST protocol, plus Triton's binary tensor extension on infer."""
    router = APIRouter(tags=["v2"])

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
        # Normally answered by InferFastPath before FastAPI; this route documents it and serves
        # apps built without the fast path.
        payload, json_length = await handlers.v2_infer(
            await request.body(),
            model_name,
            model_version,
            request.headers.get(HEADER_LENGTH),
            request.headers.get("content-encoding"),
        )
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


def build_v1_router(dataplane: DataPlane, handlers: RestInference) -> APIRouter:
    """`POST /v1/models/{name}:predict` with `{"instances": [...]}` for single-input models."""
    router = APIRouter(tags=["v1"])

    async def model_status(model_name: str) -> Response:
        return json_response({"name": model_name, "ready": dataplane.model_ready(model_name)})

    async def predict(request: Request, model_name: str) -> Response:
        body = await request.body()
        payload = await handlers.v1_predict(body, model_name, request.headers.get("content-encoding"))
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
