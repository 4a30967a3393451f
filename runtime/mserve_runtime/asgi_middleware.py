"""Pure ASGI middleware (cheaper per request than Starlette's BaseHTTPMiddleware)."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from mserve_runtime.errors import PayloadTooLarge

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyLimitMiddleware:
    """Answer 413 for bodies over `limit` bytes: by Content-Length up front, else while reading."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _message(self, size: int | None) -> str:
        got = f"of {size} bytes " if size is not None else ""
        return f"request body {got}exceeds the limit of {self.limit} bytes (MSERVE_MAX_REQUEST_BYTES)"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = 0
                if size > self.limit:
                    body = orjson.dumps({"error": self._message(size)})
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 413,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
                break
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(self._message(None))
            return message

        await self.app(scope, counting_receive, send)


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
