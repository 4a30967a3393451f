"""A pure ASGI fast path for the two inference routes, in front of the FastAPI app.

FastAPI's routing, dependency and middleware machinery cost more per request than
decoding and running a small model (profiled: about half the event loop's time at 32
connections). Infer and predict requests are answered here with the same handlers
the FastAPI routes use; every other request, and the OpenAPI document, go to FastAPI.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson

from mserve_runtime.errors import MServeError, PayloadTooLarge
from mserve_runtime.rest_infer import RestInference, error_body

log = logging.getLogger("mserve.rest")

_V2_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
_V1_PREDICT = re.compile(r"^/v1/models/([^/]+):predict$")
_JSON = b"application/json"


class InferFastPath:
    """Serve POST infer/predict directly; pass everything else to `app`."""

    def __init__(self, app: Any, handlers: RestInference) -> None:
        self.app = app
        self.handlers = handlers
        self.limit = handlers.limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            v2 = _V2_INFER.match(path)
            if v2 is not None:
                await self._serve(scope, receive, send, v2, v1=False)
                return
            v1 = _V1_PREDICT.match(path)
            if v1 is not None:
                await self._serve(scope, receive, send, v1, v1=True)
                return
        await self.app(scope, receive, send)

    async def _read_body(self, receive: Any) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.limit:
                    raise PayloadTooLarge(
                        f"request body exceeds the limit of {self.limit} bytes (MSERVE_MAX_REQUEST_BYTES)"
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _serve(
        self, scope: dict[str, Any], receive: Any, send: Any, match: re.Match[str], v1: bool
    ) -> None:
        header_length = encoding = None
        declared = 0
        for key, value in scope["headers"]:
            if key == b"inference-header-content-length":
                header_length = value.decode("latin-1")
            elif key == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
            elif key == b"content-length" and value.isdigit():
                declared = int(value)
        extra: list[tuple[bytes, bytes]] = []
        content_type = _JSON
        try:
            if declared > self.limit:
                # Answer before reading a byte of it, and close: the body stays unread.
                extra.append((b"connection", b"close"))
                raise PayloadTooLarge(
                    f"request body of {declared} bytes exceeds the limit of {self.limit} bytes "
                    "(MSERVE_MAX_REQUEST_BYTES)"
                )
            body = await self._read_body(receive)
            if body is None:
                return
            if v1:
                payload = await self.handlers.v1_predict(body, match.group(1), encoding)
            else:
                payload, json_length = await self.handlers.v2_infer(
                    body, match.group(1), match.group(2), header_length, encoding
                )
                if json_length is not None:
                    content_type = b"application/octet-stream"
                    extra.append((b"inference-header-content-length", str(json_length).encode()))
            status = 200
        except MServeError as exc:
            status, payload = exc.status_code, error_body(exc)
        except Exception as exc:
            log.exception("unhandled error on POST %s", scope["path"])
            status, payload = 500, orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})
        headers = [(b"content-type", content_type), (b"content-length", str(len(payload)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
