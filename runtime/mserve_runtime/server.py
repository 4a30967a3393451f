"""The HTTP server: `create_app` builds the FastAPI app, `run` serves it until SIGTERM.

Start-up: the port opens at once (live), the model loads and warms up in the background
(ready after that); a model that fails to load makes `run` return non-zero with the reason.
SIGTERM: ready turns false; after the drain delay the HTTP listener and the gRPC server stop
admitting together, in-flight requests of both finish within one drain timeout, then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from mserve_runtime.admission import AdmissionMiddleware
from mserve_runtime.asgi_fast_path import InferFastPath
from mserve_runtime.asgi_middleware import AccessLogMiddleware, BodyLimitMiddleware
from mserve_runtime.dataplane import DataPlane, server_version
from mserve_runtime.errors import ModelLoadError, MServeError
from mserve_runtime.logs import configure_logging
from mserve_runtime.rest_infer import RestInference, error_body
from mserve_runtime.rest_models import REQUEST_BODY_MODELS
from mserve_runtime.rest_routes import build_metrics_router, build_v1_router, build_v2_router, json_response
from mserve_runtime.settings import RuntimeSettings

log = logging.getLogger("mserve.server")

Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]


def _install_error_handlers(app: FastAPI) -> None:
    async def mserve_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MServeError)
        return Response(error_body(exc), status_code=exc.status_code, media_type="application/json")

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return json_response({"error": f"invalid request: {exc.errors()}"}, 400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return json_response({"error": str(exc.detail)}, exc.status_code)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return json_response({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    app.add_exception_handler(MServeError, mserve_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _openapi_with_body_models(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's document plus the request-body schemas the hand-decoded routes point at."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _, defs = models_json_schema(
                [(m, "validation") for m in REQUEST_BODY_MODELS], ref_template="#/components/schemas/{model}"
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            app.openapi_schema = doc
        return app.openapi_schema

    return openapi


def create_app(settings: RuntimeSettings, dataplane: DataPlane, lifespan: Lifespan | None = None) -> FastAPI:
    """The REST app: V2 + V1 routes, /metrics, one error handler (no fast path, no access log)."""
    app = FastAPI(
        title="mserve",
        version=server_version(),
        description="V2 Open Inference Protocol (with Triton's binary tensor extension) for one ONNX model.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.dataplane = dataplane
    handlers = RestInference(dataplane, settings.max_request_bytes)
    app.state.rest_inference = handlers
    app.include_router(build_v2_router(dataplane, handlers))
    app.include_router(build_v1_router(dataplane, handlers))
    app.include_router(build_metrics_router(dataplane))
    _install_error_handlers(app)
    app.openapi = _openapi_with_body_models(app)  # type: ignore[method-assign]
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    return app


def build_asgi_app(settings: RuntimeSettings, dataplane: DataPlane, lifespan: Lifespan | None = None) -> Any:
    """What uvicorn serves: access log -> admission -> inference fast path -> the FastAPI app.

    The fast path enforces the body limit itself; the FastAPI app has BodyLimitMiddleware.
    """
    app = create_app(settings, dataplane, lifespan)
    asgi: Any = InferFastPath(app, app.state.rest_inference)
    shed = dataplane.metrics.shed.labels(settings.model_name, "rest")
    asgi = AdmissionMiddleware(asgi, dataplane.admission, settings.request_timeout_s, shed.inc)
    if settings.access_log:
        asgi = AccessLogMiddleware(asgi)
    return asgi


class _DrainingServer(uvicorn.Server):
    """uvicorn's graceful shutdown, with readiness turned false the moment the signal arrives."""

    def __init__(self, config: uvicorn.Config, dataplane: DataPlane, drain_delay_s: float = 0.0) -> None:
        super().__init__(config)
        self.dataplane = dataplane
        self.drain_delay_s = drain_delay_s
        self._exit_at: float | None = None
        self.exit_code = 0
        self.grpc_handle: Any = None
        self._grpc_stopped: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        first = not self.dataplane.draining and self._exit_at is None
        self.dataplane.start_draining()
        if first and self.drain_delay_s > 0:
            # Keep serving (not ready) for a while; on_tick ends the loop when the delay is over.
            self._captured_signals.append(sig)
            self._exit_at = time.monotonic() + self.drain_delay_s
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            return True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: Any = None) -> None:
        # gRPC stops admitting the moment HTTP does, and both drain within one timeout.
        self.stop_grpc()
        await super().shutdown(sockets)

    def stop_grpc(self) -> asyncio.Task[None] | None:
        """Start stopping the gRPC server (once); the task that finishes when it has stopped."""
        if self._grpc_stopped is None and self.grpc_handle is not None:
            grace = self.config.timeout_graceful_shutdown
            self._grpc_stopped = asyncio.get_running_loop().create_task(self.grpc_handle.stop(grace))
        return self._grpc_stopped

    def fail(self, reason: str) -> None:
        log.error("exiting: %s", reason)
        self.exit_code = 1
        self.should_exit = True


async def _start_grpc(dataplane: DataPlane, port: int) -> Any:
    if importlib.util.find_spec("mserve_runtime.grpc_v2.server") is None:
        log.warning(
            "gRPC disabled: mserve_runtime.grpc_v2.server is not installed (set --grpc-port 0 to hide this)"
        )
        return None
    from mserve_runtime.grpc_v2.server import start_grpc_server

    handle = start_grpc_server(dataplane, port)
    if inspect.isawaitable(handle):
        handle = await handle
    log.info("gRPC V2 server listening on port %d", port)
    return handle


def _lifespan(settings: RuntimeSettings, dataplane: DataPlane, server: _DrainingServer) -> Lifespan:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        async def load() -> None:
            try:
                await loop.run_in_executor(None, dataplane.load)
            except ModelLoadError as exc:
                server.fail(f"model failed to load: {exc}")
            except Exception as exc:
                log.exception("model failed to load")
                server.fail(f"model failed to load: {type(exc).__name__}: {exc}")
            else:
                log.info("model '%s' is ready", settings.model_name)

        load_task = loop.create_task(load())
        if settings.grpc_port:
            try:
                server.grpc_handle = await _start_grpc(dataplane, settings.grpc_port)
            except Exception as exc:
                log.exception("gRPC server failed to start")
                server.fail(f"gRPC server failed to start on port {settings.grpc_port}: {exc}")
        try:
            yield
        finally:
            dataplane.start_draining()
            grpc_stopped = server.stop_grpc()
            if grpc_stopped is not None:
                await grpc_stopped
            with contextlib.suppress(Exception):
                await load_task
            await dataplane.close()
            log.info("stopped")

    return lifespan


def run(settings: RuntimeSettings) -> int:
    """Serve until SIGTERM/SIGINT; the process exit code (non-zero when the model fails to load)."""
    configure_logging(settings.log_level, settings.json_logs)
    dataplane = DataPlane(settings)
    log.info(
        "serving %s as '%s' on :%d (gRPC :%s), device=%s intra_op_threads=%d inference_workers=%d "
        "max_in_flight=%d request_timeout_s=%g",
        settings.model_path,
        settings.model_name,
        settings.http_port,
        settings.grpc_port or "off",
        settings.device,
        dataplane.threads,
        dataplane.workers,
        dataplane.max_in_flight,
        settings.request_timeout_s,
    )
    config = uvicorn.Config(
        "mserve_runtime.server:create_app",  # replaced below; uvicorn needs an app at construction
        host=settings.host,
        port=settings.http_port,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=settings.drain_timeout_s,
        lifespan="on",
        server_header=False,
        # uvicorn trusts X-Forwarded-* only from 127.0.0.1, never the case behind a Service;
        # skipping its middleware saves work on every request.
        proxy_headers=False,
    )
    server = _DrainingServer(config, dataplane, settings.drain_delay_s)
    config.app = build_asgi_app(settings, dataplane, lifespan=_lifespan(settings, dataplane, server))
    # uvicorn re-raises the signal it caught after shutting down; ignoring it here lets the
    # process finish with our exit code instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    if server.exit_code == 0 and not server.started:
        return 1
    return server.exit_code
