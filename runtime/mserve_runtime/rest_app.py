"""The REST adapter as one ASGI app: the route table served, documented, and its errors mapped.

Starlette's router matches paths (inference routes first); each path's endpoint checks
the method, reads the body with the one body reader, calls the route's handler and maps
any error with `error_response`. There is no second path: the OpenAPI document is
generated from the same table.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi.openapi.docs import get_swagger_ui_html
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import Route, Router, compile_path

from mserve_runtime.errors import MethodNotAllowed, MServeError, PayloadTooLarge, RouteNotFound
from mserve_runtime.request_limits import RequestLimits
from mserve_runtime.rest_body import declared_length, read_body
from mserve_runtime.rest_routes import RestRequest, RestResponse, RestRoute

log = logging.getLogger("mserve.rest")

Scope = dict[str, Any]
TITLE = "mserve"
DESCRIPTION = "V2 Open Inference Protocol (with Triton's binary tensor extension) for one ONNX model."


def error_response(exc: Exception) -> RestResponse:
    """The one mapping from errors to REST answers: the class's status and `{"error": message}`."""
    if isinstance(exc, MServeError):
        headers = [(b"connection", b"close")] if isinstance(exc, PayloadTooLarge) else []
        if isinstance(exc, MethodNotAllowed):
            headers.append((b"allow", exc.allowed.encode()))
        return RestResponse(orjson.dumps({"error": exc.message}), exc.status_code, headers=headers)
    return RestResponse(orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"}), 500)


async def send_response(send: Any, response: RestResponse) -> None:
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", b"%d" % len(response.body)),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


class PathEndpoint:
    """The ASGI endpoint of one path: its routes by method."""

    def __init__(self, routes: list[RestRoute], limits: RequestLimits) -> None:
        self.routes = {route.method: route for route in routes}
        self.allowed = ", ".join(sorted(self.routes))
        self.limits = limits

    def _limit(self, route: RestRoute, headers: dict[bytes, bytes]) -> tuple[int, str]:
        all_json = route.json_only or b"inference-header-content-length" not in headers
        if all_json and b"content-encoding" not in headers:
            return self.limits.max_json_bytes, "MSERVE_MAX_JSON_BYTES"
        return self.limits.max_request_bytes, "MSERVE_MAX_REQUEST_BYTES"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        try:
            route = self.routes.get(scope["method"])
            if route is None:
                message = f"method {scope['method']} not allowed here (allowed: {self.allowed})"
                raise MethodNotAllowed(message, self.allowed)
            headers = dict(scope["headers"])
            request = RestRequest(scope["path_params"], headers, scope=scope)
            if route.request_body is not None:
                limit, setting = self._limit(route, headers)
                declared = declared_length(headers.get(b"content-length"))
                body = await read_body(receive, declared, limit, setting)
                if body is None:
                    return  # the client went away
                request.body = body
            response = await route.handler(request)
        except MServeError as exc:
            response = error_response(exc)
        except Exception as exc:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = error_response(exc)
        await send_response(send, response)


def _schema(refs: dict[Any, Any], model: type[BaseModel] | None) -> dict[str, Any]:
    return refs[(model, "serialization")] if model is not None else {"type": "string"}


# How each authentication mode asks for credentials, in OpenAPI's terms.
_SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_SCHEMES_BY_MODE = {"none": (), "apiKey": ("bearer", "apiKey"), "kubernetes": ("bearer",)}


def openapi_document(
    routes: list[RestRoute], version: str, auth: str = "none", open_routes: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """OpenAPI 3.1 for the route table, with the wire models' JSON schemas as components;
    with authentication, its schemes (every route but `open_routes` requires one)."""
    keyed: list[tuple[type[BaseModel], Any]] = []
    for route in routes:
        if route.request_body is not None:
            keyed.append((route.request_body, "validation"))
        keyed += [(model, "serialization") for model in route.responses.values() if model is not None]
    refs, defs = models_json_schema(list(dict.fromkeys(keyed)), ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        _, _, params = compile_path(route.path)
        operation: dict[str, Any] = {
            "tags": [route.tag],
            "operationId": route.name,
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
            ]
            + list(route.headers),
            "responses": {
                str(status): {
                    "description": "OK" if status < 400 else "Error",
                    "content": {route.response_type: {"schema": _schema(refs, model)}},
                }
                for status, model in route.responses.items()
            },
        }
        if route.request_body is not None:
            schema = refs[(route.request_body, "validation")]
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        if route.name in open_routes:
            operation["security"] = []
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    schemes = _SCHEMES_BY_MODE[auth]
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": version, "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {})},
    }
    if schemes:
        document["components"]["securitySchemes"] = {name: _SECURITY_SCHEMES[name] for name in schemes}
        document["security"] = [{name: []} for name in schemes]
    return document


class StaticEndpoint:
    """A fixed document (the OpenAPI JSON, the docs page), for GET."""

    def __init__(self, body: bytes, content_type: bytes) -> None:
        self.response = RestResponse(body, content_type=content_type)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            error = MethodNotAllowed(f"method {scope['method']} not allowed here (allowed: GET)", "GET")
            await send_response(send, error_response(error))
            return
        await send_response(send, self.response)


async def _not_found(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send_response(send, error_response(RouteNotFound(f"no route {scope['path']!r:.200}")))


def _routes(table: list[RestRoute], limits: RequestLimits) -> list[Route]:
    by_path: dict[str, list[RestRoute]] = {}
    for route in table:
        by_path.setdefault(route.path, []).append(route)
    return [Route(path, PathEndpoint(group, limits)) for path, group in by_path.items()]


def build_rest_app(
    routes: list[RestRoute], limits: RequestLimits, version: str, lifespan: Any = None
) -> Router:
    """The serving port's ASGI app: one Starlette route per path, in table order."""
    return Router(_routes(routes, limits), default=_not_found, lifespan=lifespan)


def build_admin_app(
    admin_routes: list[RestRoute],
    document: dict[str, Any],
    limits: RequestLimits,
    docs_ui: bool = True,
) -> Router:
    """The admin port's ASGI app: `admin_routes` (health, /metrics), the OpenAPI `document`
    of the serving port as /openapi.json, and the docs UI on it at /docs unless `docs_ui` is off."""
    served = _routes(admin_routes, limits)
    served.append(Route("/openapi.json", StaticEndpoint(orjson.dumps(document), b"application/json")))
    if docs_ui:
        docs = get_swagger_ui_html(openapi_url="/openapi.json", title=f"{TITLE} - docs").body
        served.append(Route("/docs", StaticEndpoint(bytes(docs), b"text/html; charset=utf-8")))
    return Router(served, default=_not_found)
