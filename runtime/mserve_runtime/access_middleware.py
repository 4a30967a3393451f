"""REST's hook into access control (access.py): authenticate, rate-limit and meter each request
before its body is read; the health routes stay open for probes."""

from __future__ import annotations

from typing import Any

from mserve_runtime.access import Access, error_headers
from mserve_runtime.admission import send_error
from mserve_runtime.errors import MServeError
from mserve_runtime.usage_metrics import Usage, current_usage

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
_AUTHORIZATION = b"authorization"
_API_KEY = b"x-api-key"


class AccessMiddleware:
    def __init__(self, app: Any, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        access = self.access
        authorization = api_key = None
        if access.checks:
            for key, value in scope["headers"]:
                if key == _AUTHORIZATION:
                    authorization = authorization if authorization is not None else value
                elif key == _API_KEY:
                    api_key = api_key if api_key is not None else value
        try:
            if access.reviewer is None:
                caller = access.admit_now(authorization, api_key)
            else:
                caller = await access.admit(authorization, api_key)
        except MServeError as exc:
            await send_error(send, exc.status_code, exc.message, error_headers(exc))
            return
        if scope["method"] != "POST":  # only inference is metered
            await self.app(scope, receive, send)
            return
        usage = Usage()
        counted = [0, 0]

        async def counting_receive() -> dict[str, Any]:
            message = await receive()
            counted[0] += len(message.get("body", b""))
            return message

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                counted[1] += len(message.get("body", b""))
            await send(message)

        token = current_usage.set(usage)
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            current_usage.reset(token)
            # The router wrote the matched route's parameters into the scope.
            model = scope.get("path_params", {}).get("model_name")
            if model is not None and not usage.forwarded:
                access.usage.record(model, caller, usage, counted[0], counted[1])
