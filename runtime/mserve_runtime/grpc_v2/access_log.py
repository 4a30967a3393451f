"""One access-log record per gRPC call, in the same shape as the REST access log."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger("mserve.access")


def _peer_host(peer: str) -> str:
    # "ipv4:127.0.0.1:5555" / "ipv6:[::1]:5555" -> the address without the port.
    address = peer.split(":", 1)[1] if ":" in peer else peer
    return address.rsplit(":", 1)[0].strip("[]")


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    """Logs client, method, gRPC status and duration of every unary call (fields in JSON logs)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary

        async def logged(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await inner(request, context)
                code = context.code() or grpc.StatusCode.OK
                return response
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                if log.isEnabledFor(logging.INFO):
                    ms = (time.perf_counter() - started) * 1000
                    client = _peer_host(context.peer())
                    log.info(
                        '%s "gRPC %s" %s %.2fms',
                        client,
                        method,
                        code.name,
                        ms,
                        extra={
                            "client": client,
                            "method": "gRPC",
                            "path": method,
                            "status": code.name,
                            "duration_ms": round(ms, 3),
                        },
                    )

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
