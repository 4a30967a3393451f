"""The V2 gRPC endpoint: `inference.GRPCInferenceService` on `grpc.aio`, over the DataPlane.

Each RPC decodes, calls the protocol-agnostic DataPlane and encodes, like the REST routes;
errors map once from the runtime's error classes to gRPC status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import grpc
from typing_extensions import override  # typing.override from Python 3.12

from mserve_runtime.errors import MServeError, Overloaded
from mserve_runtime.grpc_v2 import codec
from mserve_runtime.grpc_v2.access import AccessInterceptor
from mserve_runtime.grpc_v2.access_log import AccessLogInterceptor
from mserve_runtime.grpc_v2.admission import PUSHBACK, AdmissionInterceptor
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from mserve_runtime.pool_dataplane import PoolDataPlane
from mserve_runtime.request_limits import RequestLimits

if TYPE_CHECKING:
    from mserve_runtime.access import Access
    from mserve_runtime.dataplane import DataPlane
    from mserve_runtime.tls_reload import TlsFiles

log = logging.getLogger("mserve.grpc")

PROTOCOL = "grpc"
# By the HTTP status each runtime error carries, so the two protocols cannot disagree.
_CODE_BY_HTTP_STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code_of(error: MServeError) -> grpc.StatusCode:
    return _CODE_BY_HTTP_STATUS.get(error.status_code, grpc.StatusCode.INTERNAL)


async def _abort(context: grpc.aio.ServicerContext, error: Exception) -> NoReturn:
    if isinstance(error, Overloaded):  # gRFC A6's pushback, as the admission interceptor sends
        await context.abort(status_code_of(error), error.message, trailing_metadata=PUSHBACK)
    if isinstance(error, MServeError):
        await context.abort(status_code_of(error), error.message)
    log.exception("gRPC request failed", exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """RPCs not overridden here answer UNIMPLEMENTED (the generated base class does that)."""

    def __init__(self, dataplane: DataPlane, limits: RequestLimits) -> None:
        self.dataplane = dataplane
        self.limits = limits

    @override
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @override
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @override
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            ready = self.dataplane.model_ready(request.name, request.version or None)
        except Exception as error:
            await _abort(context, error)
        return pb.ModelReadyResponse(ready=ready)

    @override
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return codec.encode_server_metadata(self.dataplane.server_metadata())

    @override
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        try:
            metadata = self.dataplane.model_metadata(request.name, request.version or None)
        except Exception as error:
            await _abort(context, error)
        return codec.encode_model_metadata(metadata)

    @override
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        started = time.perf_counter()
        status = grpc.StatusCode.OK
        try:
            decoded = codec.decode_infer_request(request, self.limits)
            response = await self.dataplane.infer(request.model_name, decoded, request.model_version or None)
            return codec.encode_infer_response(response, raw=codec.answers_raw(request, response))
        except asyncio.CancelledError:
            status = grpc.StatusCode.CANCELLED  # the client cancelled or its deadline passed
            raise
        except Exception as error:
            status = status_code_of(error) if isinstance(error, MServeError) else grpc.StatusCode.INTERNAL
            await _abort(context, error)
        finally:
            self.dataplane.metrics.observe_request(
                request.model_name, PROTOCOL, status.name, time.perf_counter() - started
            )


def _servicer(dataplane: DataPlane, limits: RequestLimits) -> InferenceServicer:
    """A pool server's servicer also answers the model repository RPCs."""
    if isinstance(dataplane, PoolDataPlane):
        from mserve_runtime.grpc_v2.repository import PoolInferenceServicer

        return PoolInferenceServicer(dataplane, limits)
    return InferenceServicer(dataplane, limits)


@dataclass
class GrpcServerHandle:
    """A running gRPC server; `port` is the bound port (useful when asked for port 0)."""

    server: grpc.aio.Server
    port: int

    async def stop(self, grace_s: float) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to `grace_s` seconds, then close."""
        await self.server.stop(grace_s)


async def start_grpc_server(
    dataplane: DataPlane,
    port: int,
    *,
    max_message_bytes: int | None = None,
    host: str | None = None,
    access: Access | None = None,
    tls: TlsFiles | None = None,
) -> GrpcServerHandle:
    """Serve `inference.GRPCInferenceService` on `host:port`; port 0 picks a free one.

    `max_message_bytes` and `host` default to the request limits and the data plane's `host`,
    so REST and gRPC accept the same request sizes on the same address. `access` checks
    callers (default: none, metered as `anonymous`); with `tls` the port serves TLS only.
    """
    from mserve_runtime.access import Access

    settings = dataplane.settings
    limits = RequestLimits.from_settings(settings)
    host = host if host is not None else settings.host
    if max_message_bytes is None:
        max_message_bytes = limits.max_request_bytes
    shed = dataplane.metrics.shed.labels(settings.model_name, PROTOCOL)
    admission = AdmissionInterceptor(dataplane.admission, settings.request_timeout_s, shed.inc)
    checks = AccessInterceptor(access if access is not None else Access(settings, dataplane.usage))
    interceptors = [AccessLogInterceptor()] if settings.access_log else []
    server = grpc.aio.server(
        interceptors=[*interceptors, checks, admission],
        options=[
            # A larger request gets RESOURCE_EXHAUSTED from gRPC itself, like 413 on REST.
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            # gRPC sets SO_REUSEPORT by default: a second server on a taken port would start
            # and silently share its traffic instead of failing.
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_servicer(dataplane, limits), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is not None:
            bound = server.add_secure_port(address, tls.grpc_credentials())
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen for gRPC on {address}: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    await server.start()
    log.debug("gRPC V2 inference service listening on %s", f"{host}:{bound}")
    return GrpcServerHandle(server, bound)
