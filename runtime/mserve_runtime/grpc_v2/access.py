"""gRPC's hook into access control (see mserve_runtime/access.py): metadata `authorization:
Bearer <key>` or `x-api-key` is checked when the call starts, before its message is parsed;
ServerLive and ServerReady stay open for probes. ModelInfer calls are metered per caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from mserve_runtime.access import Access
from mserve_runtime.errors import MServeError, RateLimited
from mserve_runtime.usage_metrics import Usage, current_usage

_SERVICE = "/inference.GRPCInferenceService/"
OPEN_METHODS = frozenset({_SERVICE + "ServerLive", _SERVICE + "ServerReady"})
_INFER_METHOD = _SERVICE + "ModelInfer"


def _metadata_value(metadata: Any, key: str) -> bytes | None:
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, bytes) else value.encode()
    return None


def _refusal(handler: grpc.RpcMethodHandler, error: MServeError) -> grpc.RpcMethodHandler:
    """A handler of the same kind that answers `error` without parsing the request."""
    from mserve_runtime.grpc_v2.server import status_code_of

    code = status_code_of(error)
    trailing: tuple[tuple[str, str], ...] = ()
    if isinstance(error, RateLimited):
        # Retry-After as on REST, and gRFC A6's pushback for clients that retry on their own.
        after = error.retry_after_s
        trailing = (("retry-after", str(after)), ("grpc-retry-pushback-ms", str(after * 1000)))

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, error.message, trailing_metadata=trailing)

    ignore = lambda _: None  # noqa: E731 (the message is never parsed)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, request_deserializer=ignore)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, request_deserializer=ignore)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, request_deserializer=ignore)
    return grpc.stream_stream_rpc_method_handler(refuse, request_deserializer=ignore)


class AccessInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, access: Access) -> None:
        self.access = access

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in OPEN_METHODS:
            return handler
        access = self.access
        metadata = handler_call_details.invocation_metadata if access.checks else None
        try:
            caller = await access.admit(
                _metadata_value(metadata, "authorization"), _metadata_value(metadata, "x-api-key")
            )
        except MServeError as error:
            return _refusal(handler, error)
        if method != _INFER_METHOD or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def metered(request: Any, context: grpc.aio.ServicerContext) -> Any:
            usage = Usage()
            token = current_usage.set(usage)
            response = None
            try:
                response = await inner(request, context)
                return response
            finally:
                current_usage.reset(token)
                sent = response.ByteSize() if response is not None else 0
                access.usage.record(request.model_name, caller, usage, request.ByteSize(), sent)

        return grpc.unary_unary_rpc_method_handler(
            metered,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
