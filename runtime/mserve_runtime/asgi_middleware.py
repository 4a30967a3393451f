"""Pure ASGI middleware (cheaper per request than Starlette's BaseHTTPMiddleware)."""

from __future__ import annotations

import logging
import time
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]


class AccessLogMiddleware:
    """One log record per request: method, path, status, duration (as fields in JSON logs)."""

    def __init__(self, app: Any, logger: logging.Logger | None = None) -> None:
        self.app = app
        self.log = logger or logging.getLogger("mserve.access")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if self.log.isEnabledFor(logging.INFO):
                ms = (time.perf_counter() - started) * 1000
                client = scope.get("client")
                self.log.info(
                    '%s "%s %s" %d %.2fms',
                    client[0] if client else "-",
                    scope["method"],
                    scope["path"],
                    status,
                    ms,
                    extra={
                        "client": client[0] if client else None,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(ms, 3),
                    },
                )
