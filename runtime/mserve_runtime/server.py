"""The HTTP servers: `build_asgi_app` builds the REST app, `build_admin_asgi_app` the admin
port's (health, /metrics, OpenAPI, docs: plaintext, no authentication), `run` serves both
(and gRPC) until SIGTERM.

Start-up: the port opens at once (live), the model loads and warms up in the background
(ready after that); a model that fails to load makes `run` return non-zero with the reason.
SIGTERM: ready turns false; after the drain delay the HTTP listener and the gRPC server stop
admitting together, in-flight requests of both finish within one drain timeout, then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import inspect
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import uvicorn

from mserve_runtime.access import POLL_S, Access
from mserve_runtime.access_middleware import AccessMiddleware
from mserve_runtime.admission import AdmissionMiddleware
from mserve_runtime.asgi_middleware import AccessLogMiddleware
from mserve_runtime.dataplane import DataPlane, server_version
from mserve_runtime.errors import ConfigError, ModelLoadError
from mserve_runtime.logs import configure_logging
from mserve_runtime.pool_dataplane import PoolDataPlane
from mserve_runtime.pool_routes import PoolLoadMiddleware, build_repository_routes
from mserve_runtime.pool_settings import PoolSettings
from mserve_runtime.request_limits import RequestLimits
from mserve_runtime.rest_app import build_admin_app, build_rest_app, openapi_document
from mserve_runtime.rest_infer import RestInference
from mserve_runtime.rest_routes import HEALTH_ROUTES, build_admin_routes, build_routes
from mserve_runtime.rest_shedding import shedding_protocol
from mserve_runtime.settings import RuntimeSettings
from mserve_runtime.tls_reload import TlsFiles

if TYPE_CHECKING:
    from mserve_runtime.canary_forward import CanarySplit

log = logging.getLogger("mserve.server")

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[None]]


def build_asgi_app(
    settings: RuntimeSettings,
    dataplane: DataPlane | PoolDataPlane,
    lifespan: Lifespan | None = None,
    access: Access | None = None,
    canary: CanarySplit | None = None,
) -> Any:
    """What uvicorn serves on the serving port: the REST route table (rest_routes.py) as one
    ASGI app, behind access control (access.py), admission control (admission.py) and the
    access log. `access` defaults to one built from `settings`; with `canary`, the inference
    routes split traffic with a canary (canary_forward.py)."""
    limits = RequestLimits.from_settings(settings)
    log.info(
        "request limits: body %d bytes, JSON part %d bytes, %d tensor elements",
        limits.max_request_bytes,
        limits.max_json_bytes,
        limits.max_elements,
    )
    routes = build_routes(dataplane, RestInference(dataplane, limits))
    if canary is not None:
        routes = canary.wrap_routes(routes)
    if isinstance(dataplane, PoolDataPlane):
        routes += build_repository_routes(dataplane)
    asgi: Any = build_rest_app(routes, limits, server_version(), lifespan)
    if isinstance(dataplane, PoolDataPlane):
        asgi = PoolLoadMiddleware(asgi, dataplane)
    shed = dataplane.metrics.shed.labels(settings.model_name, "rest")
    asgi = AccessMiddleware(asgi, access if access is not None else Access(settings, dataplane.usage))
    # Outside access control: the slot the HTTP protocol takes before the app runs
    # (rest_shedding.py) is given back by this middleware whatever answers the request.
    asgi = AdmissionMiddleware(asgi, dataplane.admission, settings.request_timeout_s, shed.inc)
    if settings.access_log:
        asgi = AccessLogMiddleware(asgi)
    return asgi


def build_admin_asgi_app(settings: RuntimeSettings, dataplane: DataPlane) -> Any:
    """The admin port's app: health, /metrics, the serving port's OpenAPI document and docs UI."""
    limits = RequestLimits.from_settings(settings)
    routes = build_routes(dataplane, RestInference(dataplane, limits))
    document = openapi_document(routes, server_version(), settings.auth, HEALTH_ROUTES)
    return build_admin_app(build_admin_routes(dataplane, routes), document, limits, settings.docs_ui)


class _AdminServer(uvicorn.Server):
    """A second uvicorn server on the same event loop; the serving one owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def _listen(host: str, port: int, setting: str) -> socket.socket:
    """A bound, listening TCP socket; ConfigError naming `setting` if the port cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({setting}): {exc.strerror}") from None
    sock.setblocking(False)
    return sock


async def _poll(what: str, check: Callable[[], Any]) -> None:
    """Run `check` on a side thread every POLL_S seconds until cancelled."""
    while True:
        await asyncio.sleep(POLL_S)
        try:
            await asyncio.to_thread(check)
        except Exception:
            log.exception("re-reading %s failed", what)


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


async def _start_grpc(dataplane: DataPlane, port: int, access: Access, tls: TlsFiles | None) -> Any:
    if importlib.util.find_spec("mserve_runtime.grpc_v2.server") is None:
        log.warning(
            "gRPC disabled: mserve_runtime.grpc_v2.server is not installed (set --grpc-port 0 to hide this)"
        )
        return None
    from mserve_runtime.grpc_v2.server import start_grpc_server

    handle = start_grpc_server(dataplane, port, access=access, tls=tls)
    if inspect.isawaitable(handle):
        handle = await handle
    log.info("gRPC V2 server listening on port %d%s", port, " (TLS)" if tls else "")
    return handle


@dataclasses.dataclass
class _Extras:
    """What `run` prepared before the loop starts, for the lifespan to run and stop."""

    access: Access
    admin: _AdminServer
    admin_socket: socket.socket
    tls: TlsFiles | None
    canary: CanarySplit | None = None


def _lifespan(
    settings: RuntimeSettings, dataplane: DataPlane, server: _DrainingServer, extras: _Extras
) -> Lifespan:
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        extras.access.start()
        if extras.canary is not None:
            extras.canary.start()
        admin_task = loop.create_task(extras.admin.serve(sockets=[extras.admin_socket]))
        tls_poll = loop.create_task(_poll("TLS files", extras.tls.reload)) if extras.tls else None

        async def load() -> None:
            try:
                if isinstance(dataplane, PoolDataPlane):
                    await dataplane.load()  # on this loop: requests may already be loading models
                else:
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
                server.grpc_handle = await _start_grpc(
                    dataplane, settings.grpc_port, extras.access, extras.tls
                )
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
            extras.admin.should_exit = True
            if tls_poll is not None:
                tls_poll.cancel()
            with contextlib.suppress(Exception):
                await admin_task
            await extras.access.close()
            if extras.canary is not None:
                await extras.canary.close()
            await dataplane.close()
            log.info("stopped")

    return lifespan


def run(settings: RuntimeSettings, pool: PoolSettings | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the process exit code (non-zero when the model fails to load).

    With `pool`, serve every model of `pool.dir` (pool_dataplane.py) instead of one."""
    configure_logging(settings.log_level, settings.json_logs)
    dataplane = PoolDataPlane(settings, pool) if pool is not None else DataPlane(settings)
    try:
        access = Access(settings, dataplane.usage)
        tls = TlsFiles(settings.tls_cert_file, settings.tls_key_file) if settings.tls_cert_file else None
        admin_socket = _listen(settings.host, settings.admin_port, "MSERVE_ADMIN_PORT")
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    log.info(
        "serving %s as '%s' on :%d (gRPC :%s), device=%s intra_op_threads=%d inference_workers=%d "
        "max_in_flight=%d max_queue_delay_ms=%g latency_tolerance=%g request_timeout_s=%g",
        pool.dir if pool is not None else settings.model_path,
        "(pool)" if pool is not None else settings.model_name,
        settings.http_port,
        settings.grpc_port or "off",
        settings.device,
        dataplane.threads,
        dataplane.workers,
        dataplane.max_in_flight,
        settings.max_queue_delay_ms,
        settings.latency_tolerance,
        settings.request_timeout_s,
    )
    log.info(
        "%s; TLS %s; admin (health, /metrics, /openapi.json%s) on plain HTTP :%d",
        access.describe(),
        f"on ({settings.tls_cert_file})" if tls else "off",
        ", /docs" if settings.docs_ui else "",
        admin_socket.getsockname()[1],
    )
    config = uvicorn.Config(
        "mserve_runtime.server:build_asgi_app",  # replaced below; uvicorn needs an app at construction
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
        ssl_context_factory=(lambda _config, _default: tls.context) if tls else None,
    )
    admin_config = uvicorn.Config(
        build_admin_asgi_app(settings, dataplane),
        access_log=False,
        log_config=None,
        lifespan="off",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=2,
    )
    canary = None
    if settings.rollout_file and pool is None:
        # Imported here: its HTTP client (aiohttp) costs a pod without a canary nothing at start.
        from mserve_runtime.canary_forward import CanarySplit

        limits = RequestLimits.from_settings(settings)
        canary = CanarySplit(
            settings.rollout_file,
            dataplane.metrics.registry,
            limits,
            settings.shadow_max_in_flight,
            settings.request_timeout_s,
        )
    extras = _Extras(access, _AdminServer(admin_config), admin_socket, tls, canary)
    shed = dataplane.metrics.shed.labels(settings.model_name, "rest")
    access_log = logging.getLogger("mserve.access") if settings.access_log else None
    config.http = shedding_protocol(dataplane.admission, shed.inc, access_log) or config.http
    server = _DrainingServer(config, dataplane, settings.drain_delay_s)
    lifespan = _lifespan(settings, dataplane, server, extras)
    config.app = build_asgi_app(settings, dataplane, lifespan=lifespan, access=access, canary=canary)
    # uvicorn re-raises the signal it caught after shutting down; ignoring it here lets the
    # process finish with our exit code instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    if server.exit_code == 0 and not server.started:
        return 1
    return server.exit_code
