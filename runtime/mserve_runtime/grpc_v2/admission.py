"""gRPC's hook into admission control (see mserve_runtime/admission.py): ModelInfer calls
beyond `max_in_flight` (or the queue-delay bound) get UNAVAILABLE at once, and each admitted
call's deadline is the sooner of the client's gRPC deadline and the server's `request_timeout_s`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from mserve_runtime.admission import RETRY_AFTER_S, Admission, current_scope, new_scope

_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
# gRFC A6: a retrying client waits this long before its next attempt.
PUSHBACK = (("grpc-retry-pushback-ms", str(RETRY_AFTER_S * 1000)),)


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Sheds ModelInfer beyond the cap (health and metadata RPCs are never shed)."""

    def __init__(self, admission: Admission, default_timeout_s: float, on_shed: Callable[[], None]) -> None:
        self.admission = admission
        self.default_timeout_s = default_timeout_s
        self.on_shed = on_shed

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler_call_details.method != _INFER_METHOD:
            return handler
        inner = handler.unary_unary
        admission = self.admission

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not admission.try_enter():
                self.on_shed()
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, admission.refusal(), trailing_metadata=PUSHBACK
                )
            try:
                token = current_scope.set(
                    new_scope(self.default_timeout_s, context.time_remaining(), "the gRPC deadline")
                )
                try:
                    return await inner(request, context)
                finally:
                    current_scope.reset(token)
            finally:
                admission.leave()

        return grpc.unary_unary_rpc_method_handler(
            admitted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
